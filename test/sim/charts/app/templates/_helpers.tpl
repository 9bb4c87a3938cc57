{{/* Selector labels: what a pod of this release is found by (immutable on a StatefulSet). */}}
{{- define "app.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every label, on the workload, its claims and its pods: the version is the appVersion
(the chart version as published, without helm-controller's "+<digest>"); helm.sh/chart
spells "+" as "_", which label values cannot hold. */}}
{{- define "app.labels" -}}
{{ include "app.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "app.replicas" -}}
{{- if hasKey .Values "replicaCount" }}{{ .Values.replicaCount }}
{{- else if hasKey .Values "replicas" }}{{ .Values.replicas }}
{{- else }}1{{ end }}
{{- end }}

{{- define "app.image" -}}
{{- $repository := .Values.image.repository | default (printf "ghcr.io/example/%s" .Chart.Name) -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{ printf "%s:%s" $repository $tag }}
{{- end }}

{{- define "app.claimSpec" -}}
accessModes: [ReadWriteOnce]
resources:
  requests:
    storage: {{ .size | default "1Gi" }}
{{- with .storageClass }}
storageClassName: {{ . }}
{{- end }}
{{- end }}

{{- define "app.podTemplate" -}}
metadata:
  labels:
    {{- include "app.labels" . | nindent 4 }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  containers:
  - name: {{ .Chart.Name }}
    image: {{ include "app.image" . | quote }}
    {{- with .Values.persistence }}
    volumeMounts:
    {{- range . }}
    - name: {{ .name }}
      mountPath: /data/{{ .name }}
    {{- end }}
    {{- end }}
  {{- if and (eq .Values.kind "Deployment") .Values.persistence }}
  volumes:
  {{- range .Values.persistence }}
  - name: {{ .name }}
    persistentVolumeClaim:
      claimName: {{ printf "%s-%s" $.Release.Name .name }}
  {{- end }}
  {{- end }}
{{- end }}
