{{/* The release's base name, at most 63 characters (a DNS label). */}}
{{- define "fluxgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object of the release carries. */}}
{{- define "fluxgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "fluxgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "fluxgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "fluxgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fluxgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: a digest wins over the tag; the tag defaults to appVersion. */}}
{{- define "fluxgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the git clone cache volume is mounted, and the cache directory inside it. */}}
{{- define "fluxgate.cacheMount" -}}/var/cache/fluxgate{{- end -}}
{{- define "fluxgate.cacheDir" -}}/var/cache/fluxgate/git{{- end -}}

{{/* Where the Renovate file ConfigMap is mounted. */}}
{{- define "fluxgate.renovateMount" -}}/etc/fluxgate/renovate{{- end -}}

{{/* FLUXGATE_RENOVATE_FILE: the mounted ConfigMap's key, else the path given. */}}
{{- define "fluxgate.renovateFile" -}}
{{- if .Values.renovate.file.configMapName -}}
{{- printf "%s/%s" (include "fluxgate.renovateMount" .) .Values.renovate.file.key -}}
{{- else -}}
{{- .Values.renovate.file.path -}}
{{- end -}}
{{- end -}}

{{/* Refuses combinations that cannot work, with what to change. */}}
{{- define "fluxgate.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without a Lease every replica would reconcile the same requests" -}}
{{- end -}}
{{- if not (has .Values.logging.format (list "json" "text")) -}}
{{- fail (printf "logging.format must be json or text, not %q" .Values.logging.format) -}}
{{- end -}}
{{- if lt (int .Values.concurrency) 1 -}}
{{- fail "concurrency must be at least 1" -}}
{{- end -}}
{{- if lt (int .Values.autoUpgradeLimit) 0 -}}
{{- fail "autoUpgradeLimit must be 0 (automatic upgrades off) or more" -}}
{{- end -}}
{{- if and .Values.renovate.configMap.name (not .Values.renovate.configMap.namespace) -}}
{{- fail "renovate.configMap.namespace is required with renovate.configMap.name" -}}
{{- end -}}
{{- if and .Values.renovate.configMap.namespace (not .Values.renovate.configMap.name) -}}
{{- fail "renovate.configMap.name is required with renovate.configMap.namespace" -}}
{{- end -}}
{{- range $rule := .Values.rbac.extraRules -}}
{{- range $field := list "apiGroups" "resources" "verbs" "resourceNames" -}}
{{- if has "*" (index $rule $field | default list) -}}
{{- fail (printf "rbac.extraRules must not use wildcards (%s: *): name the groups, resources and verbs" $field) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.gitCredentials.create (not .Values.gitCredentials.namespaces) -}}
{{- fail "gitCredentials.create needs gitCredentials.namespaces: the namespaces of the ManagedApps that name the Secret" -}}
{{- end -}}
{{- end -}}
