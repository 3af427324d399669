{{/*
The PromQL of the dashboard and the alerts, in one place. Every series they read carries the
labels the PodMonitor (or GKE's PodMonitoring) gives it: namespace, inferenceservice, revision
(the Knative revision, or the Standard-mode predictor's Deployment: a canary beside its
stable predictor) and pod.
*/}}
{{- define "torch-predictor.promSelector" -}}
namespace="{{ .Release.Namespace }}",inferenceservice="{{ include "torch-predictor.fullname" . }}"
{{- end }}

{{/*
Dashboard panels (YAML list): title, unit, and targets of expr + legend. $__rate_interval is
Grafana's; everything else is rendered here.
*/}}
{{- define "torch-predictor.dashboardPanels" -}}
{{- $s := include "torch-predictor.promSelector" . -}}
{{- $w := "$__rate_interval" -}}
- title: Requests per second
  unit: reqps
  targets:
    - expr: sum by (revision) (rate(predictor_requests_total{ {{- $s -}} }[{{ $w }}]))
      legend: "{{`{{revision}}`}}"
- title: Errors per second, by status
  unit: reqps
  targets:
    - expr: sum by (revision, status) (rate(predictor_requests_total{ {{- $s -}} ,status!~"2.."}[{{ $w }}]))
      legend: "{{`{{revision}} {{status}}`}}"
- title: Server error ratio (5xx)
  unit: percentunit
  targets:
    # "or 0 *": a revision without a single 5xx shows 0, not nothing.
    - expr: (sum by (revision) (rate(predictor_requests_total{ {{- $s -}} ,status=~"5.."}[{{ $w }}])) or 0 * sum by (revision) (rate(predictor_requests_total{ {{- $s -}} }[{{ $w }}]))) / sum by (revision) (rate(predictor_requests_total{ {{- $s -}} }[{{ $w }}]))
      legend: "{{`{{revision}}`}}"
- title: Latency p50 / p95 / p99
  unit: s
  targets:
    {{- range list "0.5" "0.95" "0.99" }}
    - expr: histogram_quantile({{ . }}, sum by (revision, le) (rate(predictor_request_duration_seconds_bucket{ {{- $s -}} }[{{ $w }}])))
      legend: "{{`{{revision}}`}} p{{ mulf . 100 | int }}"
    {{- end }}
- title: Queue wait and forward time, p95
  unit: s
  targets:
    - expr: histogram_quantile(0.95, sum by (revision, le) (rate(predictor_queue_seconds_bucket{ {{- $s -}} }[{{ $w }}])))
      legend: "{{`{{revision}}`}} queue"
    - expr: histogram_quantile(0.95, sum by (revision, le) (rate(predictor_forward_seconds_bucket{ {{- $s -}} }[{{ $w }}])))
      legend: "{{`{{revision}}`}} forward"
- title: Batch size (rows per forward)
  unit: short
  targets:
    - expr: sum by (revision) (rate(predictor_batch_size_sum{ {{- $s -}} }[{{ $w }}])) / sum by (revision) (rate(predictor_batch_size_count{ {{- $s -}} }[{{ $w }}]))
      legend: "{{`{{revision}}`}}"
- title: Requests in flight
  unit: short
  targets:
    - expr: sum by (revision) (predictor_inflight_requests{ {{- $s -}} })
      legend: "{{`{{revision}}`}}"
- title: Model healthy (1) or broken (0)
  unit: short
  targets:
    - expr: min by (revision) (predictor_model_healthy{ {{- $s -}} })
      legend: "{{`{{revision}}`}}"
{{- end }}

{{/*
Alerting rules (YAML list of Prometheus rules), each with a runbook line.
*/}}
{{- define "torch-predictor.alertRules" -}}
{{- $s := include "torch-predictor.promSelector" . -}}
{{- $a := .Values.monitoring.alerts -}}
{{- $by := "namespace, inferenceservice, revision" -}}
- alert: TorchPredictorHighErrorRatio
  expr: (sum by ({{ $by }}) (rate(predictor_requests_total{ {{- $s -}} ,status=~"5.."}[{{ $a.window }}])) / sum by ({{ $by }}) (rate(predictor_requests_total{ {{- $s -}} }[{{ $a.window }}]))) > {{ $a.errorRatio }}
  for: {{ $a.for }}
  labels:
    severity: critical
  annotations:
    summary: "{{`{{ $labels.revision }}`}} answers {{`{{ $value | humanizePercentage }}`}} of requests with 5xx"
    runbook: "Read the revision's ERROR log lines (kubectl logs, one JSON line per request with its error); a canary: python -m predictor.rollout rollback {{ include "torch-predictor.fullname" . }}."
- alert: TorchPredictorHighP99Latency
  expr: histogram_quantile(0.99, sum by ({{ $by }}, le) (rate(predictor_request_duration_seconds_bucket{ {{- $s -}} }[{{ $a.window }}]))) > {{ $a.p99LatencySeconds }}
  for: {{ $a.for }}
  labels:
    severity: warning
  annotations:
    summary: "p99 latency of {{`{{ $labels.revision }}`}} is {{`{{ $value | humanizeDuration }}`}}"
    runbook: "Compare predictor_queue_seconds and predictor_forward_seconds on the dashboard: queueing means too few replicas (raise autoscaling.maxReplicas or lower scaleTarget), a slow forward means the model or its hardware."
- alert: TorchPredictorModelUnhealthy
  expr: min by ({{ $by }}, pod) (predictor_model_healthy{ {{- $s -}} }) == 0
  for: 1m
  labels:
    severity: critical
  annotations:
    summary: "The model in {{`{{ $labels.pod }}`}} is broken"
    runbook: "Liveness fails and the kubelet restarts the pod; if it keeps breaking, read its ERROR line (the fatal device error) and check the node's GPU (kubectl describe node)."
- alert: TorchPredictorNoTraffic
  expr: (max by ({{ $by }}) (predictor_model_healthy{ {{- $s -}} }) == 1) unless on ({{ $by }}) (sum by ({{ $by }}) (rate(predictor_requests_total{ {{- $s -}} }[{{ $a.noTrafficWindow }}])) > 0)
  for: {{ $a.noTrafficWindow }}
  labels:
    severity: info
  annotations:
    summary: "{{`{{ $labels.revision }}`}} is ready but has answered no request for {{ $a.noTrafficWindow }}"
    runbook: "Check the route: kubectl get inferenceservice {{ include "torch-predictor.fullname" . }} -o yaml (traffic, canaryStatuses) and the gateway; a canary at 0% is expected to be idle."
{{- end }}
