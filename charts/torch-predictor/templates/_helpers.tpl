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
Name of the stable predictor's Deployment and Service: <fullname>-predictor, or
<fullname>-<predictorName>-predictor when predictorName is set (Standard mode).
*/}}
{{- define "torch-predictor.predictorService" -}}
{{- $name := include "torch-predictor.fullname" . }}
{{- if .Values.predictorName }}
{{- printf "%s-%s-predictor" $name .Values.predictorName }}
{{- else }}
{{- printf "%s-predictor" $name }}
{{- end }}
{{- end }}

{{/*
The Standard-mode canaries (spec.canary), as a JSON list for fromJsonArray: canary.variants
when it is non-empty, else the single canary.* entry; [] when canary.enabled is false or the
mode is Knative. Each entry has its defaults filled in from the stable predictor: name,
trafficPercent, image (a full reference), storageUri, resources, minReplicas (0: unset),
replicas (what KServe runs: minReplicas, else ceil(autoscaling.minReplicas x trafficPercent /
100)) and service (the entry's own Service, <fullname>-<name>-predictor).
*/}}
{{- define "torch-predictor.canaries" -}}
{{- $entries := list }}
{{- if and .Values.canary.enabled (not (include "torch-predictor.knative" .)) }}
{{- $c := .Values.canary }}
{{- $given := $c.variants | default (list (dict "name" $c.name "trafficPercent" $c.trafficPercent "image" $c.image "storageUri" $c.storageUri "resources" $c.resources "minReplicas" $c.minReplicas)) }}
{{- $fullname := include "torch-predictor.fullname" . }}
{{- range $given }}
{{- $entries = append $entries (dict
  "name" .name
  "trafficPercent" (int .trafficPercent)
  "image" (.image | default (include "torch-predictor.image" $))
  "storageUri" (.storageUri | default $.Values.model.storageUri)
  "resources" (.resources | default $.Values.resources)
  "minReplicas" (int (.minReplicas | default 0))
  "replicas" (int (.minReplicas | default (div (add (mul (int $.Values.autoscaling.minReplicas) (int .trafficPercent)) 99) 100)))
  "service" (printf "%s-%s-predictor" $fullname .name)) }}
{{- end }}
{{- end }}
{{- toJson $entries }}
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
{{- $knative := include "torch-predictor.knative" . }}
{{- $fullname := include "torch-predictor.fullname" . }}
{{- $c := .Values.canary }}
{{- if and $knative .Values.predictorName }}
{{- fail (printf "predictorName=%s needs deploymentMode Standard (or RawDeployment): it names the stable predictor's Deployment and Service for Standard-mode canaries (spec.predictor.name). In %s mode the predictor stays the Knative Service %s-predictor that the latest-/prev- tag routes, the helm test and the notes use. Leave predictorName empty or set deploymentMode=Standard." .Values.predictorName .Values.deploymentMode $fullname) }}
{{- end }}
{{- if .Values.predictorName }}
{{- $service := include "torch-predictor.predictorService" . }}
{{- if gt (len $service) 63 }}
{{- fail (printf "predictorName=%s makes the stable predictor's Service %s, %d characters: Kubernetes refuses Service names over 63. Shorten predictorName (or the release name, fullnameOverride)." .Values.predictorName $service (len $service)) }}
{{- end }}
{{- end }}
{{- if and $c.enabled $knative }}
{{- if $c.variants }}
{{- fail (printf "canary.variants (%d of them) in %s mode: Knative splits traffic between two revisions only; variants need deploymentMode Standard. Set deploymentMode=Standard or canary.variants=[] (and canary.trafficPercent for the one Knative canary)." (len $c.variants) .Values.deploymentMode) }}
{{- end }}
{{- range $key := list "image" "storageUri" "resources" "minReplicas" }}
{{- if get $c $key }}
{{- fail (printf "canary.%s applies to deploymentMode Standard only (spec.canary). In %s mode the canary is the next revision, made from the chart's own values: with canary.enabled=true set image.tag (or image.digest), model.storageUri or resources instead, and leave canary.%s empty." $key $.Values.deploymentMode $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- $canaries := include "torch-predictor.canaries" . | fromJsonArray }}
{{- if $canaries }}
{{- if not .Values.model.storageUri }}
{{- fail "canary.enabled=true in Standard mode needs model.storageUri (the stable model): KServe's webhook refuses a canary beside a predictor without one (\"canary requires a stable predictor with a model (multi-model serving is not supported with canary)\"); for this chart's container that is its STORAGE_URI. Serve the model from model.storageUri, not the copy baked into the image." }}
{{- end }}
{{- $stableMin := int .Values.autoscaling.minReplicas }}
{{- $seen := dict }}
{{- $total := 0 }}
{{- range $i, $e := $canaries }}
{{- $value := ternary (printf "canary.variants[%d]" $i) "canary" (not (empty $c.variants)) }}
{{- if hasKey $seen $e.name }}
{{- fail (printf "%s.name=%s is taken by %s already: KServe's webhook refuses it (\"canary predictor.name %q is duplicated\"). Give each variant its own name." $value $e.name (get $seen $e.name) $e.name) }}
{{- end }}
{{- $_ := set $seen $e.name $value }}
{{- if eq $e.name $.Values.predictorName }}
{{- fail (printf "%s.name=%s is predictorName too: KServe's webhook refuses it (\"canary predictor.name %q conflicts with stable predictor name\"). A canary needs a name of its own; after a promotion (predictorName=%s) name the next canary differently." $value $e.name $e.name $e.name) }}
{{- end }}
{{- if gt (len $e.service) 63 }}
{{- fail (printf "%s.name=%s makes the canary's Service %s, %d characters: Kubernetes refuses Service names over 63. Shorten the name (or the release name, fullnameOverride)." $value $e.name $e.service (len $e.service)) }}
{{- end }}
{{- if gt (int $e.minReplicas) $stableMin }}
{{- fail (printf "%s.minReplicas=%d is above autoscaling.minReplicas=%d: KServe's webhook refuses it (\"canary %q minReplicas (%d) must not exceed stable predictor minReplicas (%d)\"). Lower it or raise autoscaling.minReplicas." $value (int $e.minReplicas) $stableMin $e.name (int $e.minReplicas) $stableMin) }}
{{- end }}
{{- $total = add $total $e.trafficPercent }}
{{- end }}
{{- if gt (int $total) 100 }}
{{- fail (printf "the canaries' trafficPercent values add up to %d: KServe's webhook refuses it (\"sum of canary trafficPercent values (%d) must be <= 100\"). The stable predictor gets 100 minus their sum; lower them." (int $total) (int $total)) }}
{{- end }}
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
