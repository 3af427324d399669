{{/*
Expand the name of the chart.
*/}}
{{- define "torch-predictor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the InferenceService name. KServe derives host names such as
<name>-predictor-<namespace> from it, so it is kept to 45 characters.
If the release name contains the chart name, the release name alone is used.
*/}}
{{- define "torch-predictor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "torch-predictor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "torch-predictor.labels" -}}
helm.sh/chart: {{ include "torch-predictor.chart" . }}
{{ include "torch-predictor.selectorLabels" . }}
app.kubernetes.io/version: {{ include "torch-predictor.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "torch-predictor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "torch-predictor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "torch-predictor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "torch-predictor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag (defaults to the chart's appVersion) and full image reference.
*/}}
{{- define "torch-predictor.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "torch-predictor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "torch-predictor.imageTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "torch-predictor.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
True ("true") when the deployment mode is Knative (also spelled Serverless).
*/}}
{{- define "torch-predictor.knative" -}}
{{- if has .Values.deploymentMode (list "Knative" "Serverless") }}true{{ end }}
{{- end }}

{{/*
Container port the traffic goes to: http1 8080 (REST) or h2c 8081 (gRPC).
*/}}
{{- define "torch-predictor.port" -}}
{{- if eq .Values.transport "grpc" }}8081{{ else }}8080{{ end }}
{{- end }}

{{/*
The predictor container, kserve-container, as a YAML map (keys at column 0): the same for the
stable predictor and for every Standard-mode canary, which differ only in what the dict
passes: root (the chart's context), image (a full reference), storageUri (STORAGE_URI, empty:
the model baked into the image) and resources (GPUs added when gpu.enabled). KServe replaces
the container list of a canary whole, so a canary carries all of it.
*/}}
{{- define "torch-predictor.container" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $knative := include "torch-predictor.knative" $root -}}
name: kserve-container
image: {{ .image | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
args:
  - --model_name={{ $v.model.name }}
  - --http_port=8080
  - --grpc_port=8081
  {{- if eq $v.transport "grpc" }}
  - --enable_grpc=true
  {{- end }}
  - --inference_threads={{ $v.server.inferenceThreads }}
  - --device={{ if $v.gpu.enabled }}cuda{{ else }}{{ $v.model.device }}{{ end }}
  - --dtype={{ $v.model.dtype }}
  {{- with $v.model.modelClass }}
  - --model_class={{ . }}
  {{- end }}
  {{- with $v.model.handler }}
  - --handler={{ . }}
  {{- end }}
  {{- if $v.server.maxBatchSize }}
  - --max_batch_size={{ $v.server.maxBatchSize }}
  - --max_batch_delay_ms={{ $v.server.maxBatchDelayMs }}
  {{- end }}
  {{- with $v.server.maxRequestBytes }}
  - --max_request_bytes={{ . }}
  {{- end }}
  {{- with $v.server.maxInflight }}
  - --max_inflight={{ . }}
  {{- end }}
  {{- /* SIGTERM: answer while the endpoints catch up (a fifth of the pod's grace), then
         finish what is in flight, within what is left for HTTP and gRPC in turn. */}}
  {{- $podGrace := ternary $v.timeout $v.terminationGracePeriodSeconds (eq $knative "true") | int }}
  {{- $drain := div $podGrace 5 }}
  - --drain_seconds={{ $drain }}
  - --grace_period={{ div (sub $podGrace $drain) 2 }}
  {{- if $v.server.enableLatencyLogging }}
  - --enable_latency_logging=true
  {{- end }}
  {{- range $v.server.extraArgs }}
  - {{ . | quote }}
  {{- end }}
env:
  - name: HOME
    value: /tmp
  {{- with .storageUri }}
  # KServe's storage initializer downloads this to /mnt/models before the server starts.
  - name: STORAGE_URI
    value: {{ . | quote }}
  {{- end }}
  {{- with $v.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  {{- if eq $v.transport "grpc" }}
  - name: h2c
    containerPort: 8081
    protocol: TCP
  {{- else }}
  - name: http1
    containerPort: 8080
    protocol: TCP
  {{- end }}
readinessProbe:
  httpGet:
    path: {{ $v.probes.readiness.path }}
    port: 8080
  initialDelaySeconds: {{ $v.probes.readiness.initialDelaySeconds }}
  periodSeconds: {{ $v.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $v.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: {{ $v.probes.liveness.path }}
    port: 8080
  initialDelaySeconds: {{ $v.probes.liveness.initialDelaySeconds }}
  periodSeconds: {{ $v.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $v.probes.liveness.failureThreshold }}
{{- $resources := deepCopy (.resources | default dict) }}
{{- if $v.gpu.enabled }}
{{- $limits := get $resources "limits" | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" ($v.gpu.count | toString) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- with $resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
Checks across values that values.schema.json cannot express clearly. Fails the render with a
message that says what to change.
*/}}
{{- define "torch-predictor.validate" -}}
{{- if and .Values.canary.enabled (not (include "torch-predictor.knative" .)) }}
{{- fail (printf "canary.enabled=true needs deploymentMode Knative (or Serverless): KServe's %s mode ignores canaryTrafficPercent and would send all traffic to the new revision. Set deploymentMode=Knative or canary.enabled=false." .Values.deploymentMode) }}
{{- end }}
{{- if and (eq (int .Values.autoscaling.minReplicas) 0) (not (include "torch-predictor.knative" .)) }}
{{- fail (printf "autoscaling.minReplicas=0 (scale-to-zero) needs deploymentMode Knative (or Serverless); KServe's %s mode keeps at least one replica." .Values.deploymentMode) }}
{{- end }}
{{- if and (gt (int .Values.autoscaling.maxReplicas) 0) (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail (printf "autoscaling.maxReplicas (%d) must be 0 or at least autoscaling.minReplicas (%d)." (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- end }}
{{- if and .Values.logger.enabled (not .Values.logger.url) }}
{{- fail "logger.enabled=true needs logger.url (the sink that receives the CloudEvents)." }}
{{- end }}
{{- end }}
