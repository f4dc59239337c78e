{{/* The chart name, or nameOverride. */}}
{{- define "cxpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: the release name, plus the chart name unless the release already contains it. */}}
{{- define "cxpulse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "cxpulse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "cxpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the engine's pods. */}}
{{- define "cxpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cxpulse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The service account of the pods. */}}
{{- define "cxpulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cxpulse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the SASL username and password. */}}
{{- define "cxpulse.saslSecretName" -}}
{{- default (printf "%s-sasl" (include "cxpulse.fullname" .)) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{/* The Secret holding the admin token; empty: no token (the admin endpoints are off). */}}
{{- define "cxpulse.adminSecretName" -}}
{{- if .Values.admin.token.existingSecret }}
{{- .Values.admin.token.existingSecret }}
{{- else if .Values.admin.token.create }}
{{- printf "%s-admin" (include "cxpulse.fullname" .) }}
{{- end }}
{{- end }}

{{/* The ConfigMap of the query files. */}}
{{- define "cxpulse.queriesConfigMap" -}}
{{- default (printf "%s-queries" (include "cxpulse.fullname" .)) .Values.queries.existingConfigMap }}
{{- end }}

{{/* The ConfigMap of the shared views. */}}
{{- define "cxpulse.viewsConfigMap" -}}
{{- default (printf "%s-views" (include "cxpulse.fullname" .)) .Values.queries.existingViewsConfigMap }}
{{- end }}

{{/* Whether the cluster serves the Prometheus operator's resources. */}}
{{- define "cxpulse.hasMonitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/*
The engine's configuration file: the chart's settings, then
.Values.config over them. Secrets are not in it: SASL credentials and
the admin token come from environment variables, TLS files from a mounted
Secret.
*/}}
{{- /*
The instances' cluster.generation: the release revision that last changed
replicaCount (read back from the StatefulSet's annotation), so that only a
rescale starts a new generation, and a pod of the old count that restarts
during the rolling update stops instead of processing its old partitions.
*/ -}}
{{- define "cxpulse.generation" -}}
{{- $set := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "cxpulse.fullname" .) }}
{{- $kept := dig "metadata" "annotations" "cxpulse.io/generation" "" $set }}
{{- if and $kept (eq (int (dig "spec" "replicas" -1 $set)) (int .Values.replicaCount)) }}
{{- $kept }}
{{- else }}
{{- .Release.Revision }}
{{- end }}
{{- end }}

{{- define "cxpulse.configToml" -}}
{{- $properties := deepCopy .Values.kafka.properties }}
{{- $sasl := .Values.kafka.sasl }}
{{- $tls := .Values.kafka.tls }}
{{- if and $sasl.enabled $tls.enabled }}
{{- $_ := set $properties "security.protocol" "SASL_SSL" }}
{{- else if $sasl.enabled }}
{{- $_ := set $properties "security.protocol" "SASL_PLAINTEXT" }}
{{- else if $tls.enabled }}
{{- $_ := set $properties "security.protocol" "SSL" }}
{{- end }}
{{- if $sasl.enabled }}
{{- $_ := set $properties "sasl.mechanism" $sasl.mechanism }}
{{- end }}
{{- if and $tls.enabled $tls.existingSecret }}
{{- if $tls.caKey }}
{{- $_ := set $properties "ssl.ca.location" (printf "/etc/cxpulse/tls/%s" $tls.caKey) }}
{{- end }}
{{- if $tls.certKey }}
{{- $_ := set $properties "ssl.certificate.location" (printf "/etc/cxpulse/tls/%s" $tls.certKey) }}
{{- end }}
{{- if $tls.keyKey }}
{{- $_ := set $properties "ssl.key.location" (printf "/etc/cxpulse/tls/%s" $tls.keyKey) }}
{{- end }}
{{- end }}
{{- $chart := dict
  "kafka" (dict "brokers" .Values.kafka.brokers "group_id" .Values.kafka.groupId "properties" $properties)
  "engine" (dict "queries_dir" "/etc/cxpulse/queries" "views_dir" "/etc/cxpulse/views")
  "http" (dict "listen" (printf "0.0.0.0:%d" (int .Values.httpPort)))
  "log" (dict "format" .Values.logFormat)
  "cluster" (dict "instances" (max 1 (int .Values.replicaCount)) "generation" (int (include "cxpulse.generation" .))) }}
{{- $config := mergeOverwrite $chart (deepCopy .Values.config) }}
{{- toToml $config }}
{{- end }}
