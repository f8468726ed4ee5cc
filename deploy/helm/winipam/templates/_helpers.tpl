{{/*
Names. winipam is installed once per cluster and the controller finds its ConfigMap, Lease,
webhook Secret and webhook configurations by these names (its flags' defaults), so they are
fixed rather than derived from the release name.
*/}}
{{- define "winipam.name" -}}winipam{{- end -}}
{{- define "winipam.webhookService" -}}winipam-webhook{{- end -}}
{{- define "winipam.webhookSecret" -}}winipam-webhook-tls{{- end -}}
{{- define "winipam.metricsService" -}}winipam-metrics{{- end -}}
{{- define "winipam.certificate" -}}winipam-webhook{{- end -}}
{{/* cert-manager's Secret: another name than the self-managed one, so a switch of mode never
makes one writer take over the other's Secret. */}}
{{- define "winipam.certManagerSecret" -}}winipam-webhook-cert{{- end -}}

{{/* The ServiceAccount as the apiserver names it in RBAC and admission requests. */}}
{{- define "winipam.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "winipam.name" . }}
{{- end -}}

{{- define "winipam.selfManagedCerts" -}}
{{- if eq .Values.webhook.certMode "selfManaged" -}}true{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "winipam.labels" -}}
app.kubernetes.io/name: {{ include "winipam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The pods' labels, as Services, the PodDisruptionBudget and anti-affinity select them. */}}
{{- define "winipam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "winipam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The subject of every binding: the controller's ServiceAccount. */}}
{{- define "winipam.subjects" -}}
subjects:
  - kind: ServiceAccount
    name: {{ include "winipam.name" . }}
    namespace: {{ .Release.Namespace }}
{{- end -}}
