"""Canary rollouts of a KServe InferenceService: `python -m predictor.rollout --help`.

- `isvc`: reads the rollout state from an InferenceService and builds the patches (pure).
- `wait`: the kubernetes client: read, patch, watch until a change took effect.
- `analysis`: the same V1/V2 requests to the `prev` and `latest` revisions, compared.
- `cli`: the commands `status`, `start`, `promote`, `rollback`, `run`.
"""
