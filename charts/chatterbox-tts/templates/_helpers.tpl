{{/* vim: set filetype=mustache: */}}

{{/* The chart name, or nameOverride. */}}
{{- define "chatterbox-tts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name used as the prefix of every resource: fullnameOverride, else <release>-<chart>, or
the release name alone when it already contains the chart name. Kept to 40 characters so that
"-predictor-keda" and KServe's "-predictor" suffixes still fit the 63-character name limits.
*/}}
{{- define "chatterbox-tts.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "chatterbox-tts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every resource carries (the recommended app.kubernetes.io/* set). */}}
{{- define "chatterbox-tts.labels" -}}
helm.sh/chart: {{ include "chatterbox-tts.chart" . }}
{{ include "chatterbox-tts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chatterbox-tts
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that identify this release's pods (selectors must not change between upgrades). */}}
{{- define "chatterbox-tts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatterbox-tts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: pass (dict "ctx" $ "component" "adapter"). */}}
{{- define "chatterbox-tts.componentLabels" -}}
{{ include "chatterbox-tts.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chatterbox-tts.componentSelectorLabels" -}}
{{ include "chatterbox-tts.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Name of the InferenceService; KServe names its Deployment and Service "<this>-predictor". */}}
{{- define "chatterbox-tts.isvcName" -}}
{{- default (include "chatterbox-tts.fullname" .) .Values.predictor.inferenceServiceName | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the predictor Deployment and Service that KServe creates in Standard (raw) mode. */}}
{{- define "chatterbox-tts.predictorServiceName" -}}
{{- printf "%s-predictor" (include "chatterbox-tts.isvcName" .) -}}
{{- end -}}

{{- define "chatterbox-tts.adapterName" -}}
{{- printf "%s-adapter" (include "chatterbox-tts.fullname" .) -}}
{{- end -}}

{{/* PREDICTOR_URL: the predictor Service inside the cluster (80 -> container 8080 in KServe's Service). */}}
{{- define "chatterbox-tts.predictorUrl" -}}
{{- if .Values.adapter.predictorUrl -}}
{{- .Values.adapter.predictorUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "chatterbox-tts.predictorServiceName" .) .Release.Namespace (int .Values.adapter.predictorServicePort) -}}
{{- end -}}
{{- end -}}

{{/* image reference: pass (dict "image" .Values.x.image "ctx" $). */}}
{{- define "chatterbox-tts.image" -}}
{{- $repository := .image.repository -}}
{{- if .image.registry -}}
{{- $repository = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.variant -}}
{{- $tag = printf "%s-%s" $tag .image.variant -}}
{{- end -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "chatterbox-tts.predictorServiceAccountName" -}}
{{- if .Values.predictor.serviceAccount.create -}}
{{- default (printf "%s-predictor" (include "chatterbox-tts.fullname" .)) .Values.predictor.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.predictor.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "chatterbox-tts.adapterServiceAccountName" -}}
{{- if .Values.adapter.serviceAccount.create -}}
{{- default (include "chatterbox-tts.adapterName" .) .Values.adapter.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.adapter.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the chart's own when it creates one, else the existing one, else empty. */}}
{{- define "chatterbox-tts.apiTokenSecretName" -}}
{{- if .Values.apiToken.existingSecret -}}
{{- .Values.apiToken.existingSecret -}}
{{- else if .Values.apiToken.value -}}
{{- printf "%s-api-token" (include "chatterbox-tts.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "chatterbox-tts.apiTokenSecretKey" -}}
{{- if .Values.apiToken.existingSecret -}}{{ .Values.apiToken.existingSecretKey }}{{- else -}}API_TOKEN{{- end -}}
{{- end -}}

{{- define "chatterbox-tts.hfTokenSecretName" -}}
{{- if .Values.huggingface.existingSecret -}}
{{- .Values.huggingface.existingSecret -}}
{{- else if .Values.huggingface.token -}}
{{- printf "%s-hf-token" (include "chatterbox-tts.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "chatterbox-tts.hfTokenSecretKey" -}}
{{- if .Values.huggingface.existingSecret -}}{{ .Values.huggingface.existingSecretKey }}{{- else -}}HF_TOKEN{{- end -}}
{{- end -}}

{{- define "chatterbox-tts.voicesClaimName" -}}
{{- default (printf "%s-voices" (include "chatterbox-tts.fullname" .)) .Values.voices.existingClaim -}}
{{- end -}}

{{- define "chatterbox-tts.cacheClaimName" -}}
{{- default (printf "%s-model-cache" (include "chatterbox-tts.fullname" .)) .Values.models.cache.existingClaim -}}
{{- end -}}

{{/* The KEDA query: requests in flight summed over this release's predictor pods. */}}
{{- define "chatterbox-tts.kedaQuery" -}}
{{- if .Values.predictor.keda.query -}}
{{- .Values.predictor.keda.query -}}
{{- else -}}
{{- printf "sum(chatterbox_requests_in_flight{namespace=\"%s\",pod=~\"%s-.*\"})" .Release.Namespace (include "chatterbox-tts.predictorServiceName" .) -}}
{{- end -}}
{{- end -}}

{{/* The adapter's voices volume source. */}}
{{- define "chatterbox-tts.voicesVolume" -}}
{{- if .Values.voices.persistent -}}
persistentVolumeClaim:
  claimName: {{ include "chatterbox-tts.voicesClaimName" . }}
{{- else -}}
emptyDir: {}
{{- end -}}
{{- end -}}

{{/* preStop: sleep so that endpoint removal reaches every proxy before SIGTERM starts the drain. */}}
{{- define "chatterbox-tts.preStop" -}}
preStop:
  exec:
    command: ["sleep", {{ . | int | toString | quote }}]
{{- end -}}

{{/*
The pod's grace period (KServe's convention: at least the preStop sleep plus the drain). Pass the
component's values (.Values.predictor or .Values.adapter): 0 computes preStop + drain + 10 s for the
process to exit after the drain; an explicit value below preStop + drain is refused in "validate".
*/}}
{{- define "chatterbox-tts.terminationGracePeriodSeconds" -}}
{{- $floor := add (int .preStopSleepSeconds) (int .drainTimeoutSeconds) -}}
{{- if gt (int .terminationGracePeriodSeconds) 0 -}}
{{- int .terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $floor 10 -}}
{{- end -}}
{{- end -}}

{{/* Checks that span several values (values.schema.json covers single keys). */}}
{{- define "chatterbox-tts.validate" -}}
{{- $p := .Values.predictor -}}
{{- if not (or $p.loadStandard $p.loadTurbo $p.loadMultilingual) -}}
{{- fail "predictor: at least one of loadStandard, loadTurbo, loadMultilingual must be true" -}}
{{- end -}}
{{- if gt (int $p.autoscaling.minReplicas) (int $p.autoscaling.maxReplicas) -}}
{{- fail "predictor.autoscaling: minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- if and (eq $p.autoscaling.class "hpa") (eq $p.autoscaling.scaleMetric "cpu") (gt (int $p.autoscaling.scaleTarget) 100) -}}
{{- fail "predictor.autoscaling.scaleTarget is a CPU utilisation percentage (1-100) when scaleMetric is cpu" -}}
{{- end -}}
{{- if and $p.keda.scaledObject.enabled (ne $p.autoscaling.class "external") -}}
{{- fail "predictor.keda.scaledObject.enabled needs predictor.autoscaling.class=external (otherwise KServe also scales the Deployment)" -}}
{{- end -}}
{{- if and (eq .Values.models.source "storageUri") (not .Values.models.storageUri) (not .Values.models.storageUris) -}}
{{- fail "models.source=storageUri needs models.storageUri or models.storageUris" -}}
{{- end -}}
{{- if and .Values.adapter.autoscaling.enabled (gt (int .Values.adapter.autoscaling.minReplicas) (int .Values.adapter.autoscaling.maxReplicas)) -}}
{{- fail "adapter.autoscaling: minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- if and .Values.adapter.discoverPredictor .Values.adapter.predictorUrl -}}
{{- fail "adapter: set either predictorUrl or discoverPredictor, not both" -}}
{{- end -}}
{{- if and .Values.apiToken.value .Values.apiToken.existingSecret -}}
{{- fail "apiToken: set either value or existingSecret, not both" -}}
{{- end -}}
{{- range $component := list "predictor" "adapter" -}}
{{- $c := index $.Values $component -}}
{{- $floor := add (int $c.preStopSleepSeconds) (int $c.drainTimeoutSeconds) -}}
{{- if and (gt (int $c.terminationGracePeriodSeconds) 0) (lt (int $c.terminationGracePeriodSeconds) $floor) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds + drainTimeoutSeconds (%d), or 0 to compute it" $component (int $c.terminationGracePeriodSeconds) $floor) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.adapter.wyoming.enabled (eq (int .Values.adapter.wyoming.port) (int .Values.adapter.port)) -}}
{{- fail "adapter.wyoming.port must differ from adapter.port" -}}
{{- end -}}
{{- if and .Values.huggingface.token .Values.huggingface.existingSecret -}}
{{- fail "huggingface: set either token or existingSecret, not both" -}}
{{- end -}}
{{- end -}}
