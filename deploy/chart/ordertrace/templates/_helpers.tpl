{{/*
The release's name prefix: <release>-ordertrace, or the release name alone
when it says ordertrace already. Cut to 30 characters, so that the longest
name built on it (<prefix>-collector-gateway-headless) is a valid Service name.
*/}}
{{- define "ordertrace.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "component" names the part (gateway, collector-agent, ...). */}}
{{- define "ordertrace.labels" -}}
{{ include "ordertrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ordertrace
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The labels a selector uses: stable across upgrades. */}}
{{- define "ordertrace.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of one of the suite's services. */}}
{{- define "ordertrace.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s/%s" $img.repository .service -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $repo }}{{ end -}}
{{- printf "%s:%s" $repo ($img.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* The security context of every container: no root, no privileges, nothing written outside volumes. */}}
{{- define "ordertrace.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Secret that holds the backends' URLs when they are built in. */}}
{{- define "ordertrace.backendsSecret" -}}
{{ include "ordertrace.fullname" . }}-backends
{{- end -}}

{{/* The gateway tier's two Services: a headless one the agents' load balancer resolves to pods, and a plain one for metrics and logs. */}}
{{- define "ordertrace.collectorGatewayHeadless" -}}
{{ include "ordertrace.fullname" . }}-collector-gateway-headless
{{- end -}}
{{- define "ordertrace.collectorGateway" -}}
{{ include "ordertrace.fullname" . }}-collector-gateway
{{- end -}}

{{/* A backend URL variable: from the built-in Secret, or from the existing one the values name. */}}
{{- define "ordertrace.backendEnv" -}}
{{- $b := .root.Values.backends -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
{{- if $b.builtin.enabled }}
      name: {{ include "ordertrace.backendsSecret" .root }}
      key: {{ .key }}
{{- else }}
{{- $ext := index $b.external .backend }}
      name: {{ required (printf "backends.external.%s.secretName is required when backends.builtin.enabled is false" .backend) $ext.secretName }}
      key: {{ $ext.secretKey }}
{{- end }}
{{- end -}}
