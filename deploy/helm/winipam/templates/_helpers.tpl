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

{{/* The identities of the VPC Resource Controller (EKS's managed one and the self-installed
chart's ServiceAccounts): they write the address annotation while its Windows IPAM is on. */}}
{{- define "winipam.vpcResourceControllerUsers" -}}
["eks:vpc-resource-controller", "system:serviceaccount:kube-system:vpc-resource-controller", "system:serviceaccount:kube-system:eks-vpc-resource-controller"]
{{- end -}}

{{/* CEL variables of both address-annotation policies: the annotation before and after the
request, as a list of zero or one value (absent and "" stay apart). */}}
{{- define "winipam.addressVariables" -}}
- name: before
  expression: >-
    request.operation == 'UPDATE' && has(oldObject.metadata.annotations) &&
    'vpc.amazonaws.com/PrivateIPv4Address' in oldObject.metadata.annotations
    ? [oldObject.metadata.annotations['vpc.amazonaws.com/PrivateIPv4Address']] : []
- name: after
  expression: >-
    has(object.metadata.annotations) &&
    'vpc.amazonaws.com/PrivateIPv4Address' in object.metadata.annotations
    ? [object.metadata.annotations['vpc.amazonaws.com/PrivateIPv4Address']] : []
{{- end -}}

{{/* What both address-annotation policies match: pod writes, the status subresource included
(a pods/status update may change annotations too). */}}
{{- define "winipam.addressMatch" -}}
matchConstraints:
  resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["pods", "pods/status"]
{{- end -}}
