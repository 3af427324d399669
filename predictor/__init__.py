"""A KServe predictor for any PyTorch model."""
