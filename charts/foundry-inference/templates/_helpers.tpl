{{/*
Names. The operator Deployment `inference-operator`, the control-plane Service `inference-operator-api` and the catalog
ConfigMap `foundry-local-catalog` are names of the product's contract (clients and docs use them), so namespaced objects
carry fixed names; one release per namespace. Cluster-scoped objects add the release namespace to stay unique.
*/}}
{{- define "foundry-inference.operatorName" -}}inference-operator{{- end }}
{{- define "foundry-inference.apiName" -}}inference-operator-api{{- end }}
{{- define "foundry-inference.activatorName" -}}inference-activator{{- end }}
{{- define "foundry-inference.operatorConfigName" -}}inference-operator-config{{- end }}
{{- define "foundry-inference.adminKeyName" -}}inference-operator-admin-key{{- end }}
{{- define "foundry-inference.catalogName" -}}foundry-local-catalog{{- end }}
{{- define "foundry-inference.catalogSourceName" -}}foundry-local-catalog-source{{- end }}

{{- define "foundry-inference.clusterName" -}}
{{- printf "%s-%s" .name .ctx.Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end }}

{{- define "foundry-inference.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Selector labels of a component: (dict "ctx" $ "component" "operator") */}}
{{- define "foundry-inference.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common labels of every object the chart renders: (dict "ctx" $ "component" "operator") */}}
{{- define "foundry-inference.labels" -}}
helm.sh/chart: {{ include "foundry-inference.chart" .ctx }}
{{ include "foundry-inference.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: foundry-inference
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* The watched namespaces as a JSON list: watch.namespaces, or the release namespace. */}}
{{- define "foundry-inference.watchNamespaces" -}}
{{- $list := .Values.watch.namespaces | default (list .Release.Namespace) -}}
{{- $list | uniq | toJson -}}
{{- end }}

{{/* Every namespace the chart puts Roles in (watched ones plus the release namespace), as a JSON list. */}}
{{- define "foundry-inference.roleNamespaces" -}}
{{- $watched := include "foundry-inference.watchNamespaces" . | fromJsonArray -}}
{{- append $watched .Release.Namespace | uniq | toJson -}}
{{- end }}

{{/* An image reference: a name with a `/` is used as is, else images.registry/name:images.tag (or appVersion). */}}
{{- define "foundry-inference.image" -}}
{{- $name := .name -}}
{{- if contains "/" $name -}}
{{- $name -}}
{{- else -}}
{{- $tag := .ctx.Values.images.tag | default .ctx.Chart.AppVersion -}}
{{- $registry := .ctx.Values.images.registry | trimSuffix "/" -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry $name $tag -}}
{{- else -}}
{{- printf "%s:%s" $name $tag -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* FOUNDRY_AUTH_MODE from apiKey.enabled and entraAuth.enabled. */}}
{{- define "foundry-inference.authMode" -}}
{{- if and .Values.apiKey.enabled .Values.entraAuth.enabled -}}both
{{- else if .Values.entraAuth.enabled -}}entra
{{- else -}}api-key
{{- end -}}
{{- end }}

{{/*
Rules the schema cannot express across keys; each failure names the values to change. Called once, from the
operator Deployment template.
*/}}
{{- define "foundry-inference.validate" -}}
{{- if not (or .Values.apiKey.enabled .Values.entraAuth.enabled) -}}
{{- fail "apiKey.enabled and entraAuth.enabled are both false: enable at least one authentication method" -}}
{{- end -}}
{{- if .Values.entraAuth.enabled -}}
{{- if not (and .Values.entraAuth.tenantId .Values.entraAuth.clientId) -}}
{{- fail "entraAuth.enabled is true: set entraAuth.tenantId and entraAuth.clientId (GUIDs of your Entra ID app registration)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.api.authorization.mode "azure") (not .Values.api.authorization.azure.scope) -}}
{{- fail "api.authorization.mode is azure: set api.authorization.azure.scope (the ARM resource id checked)" -}}
{{- end -}}
{{- if and (eq .Values.api.authorization.mode "azure") (not .Values.api.authorization.azure.tokenFile) -}}
{{- fail "api.authorization.mode is azure: set api.authorization.azure.tokenFile (the platform identity's ARM token)" -}}
{{- end -}}
{{- if eq .Values.api.exposure "external" -}}
{{- if and (eq .Values.api.external.via "gateway") (not .Values.api.external.gateway.parentRefs) -}}
{{- fail "api.external.via is gateway: set api.external.gateway.parentRefs (the Gateway the HTTPRoute attaches to)" -}}
{{- end -}}
{{- if and (eq .Values.api.external.via "ingress") .Values.api.external.ingress.tls.enabled (not .Values.api.external.ingress.tls.secretName) -}}
{{- fail "api.external.ingress.tls.enabled is true: set api.external.ingress.tls.secretName" -}}
{{- end -}}
{{- if and (eq .Values.api.external.via "ingress") .Values.api.external.ingress.tls.enabled (not .Values.api.external.ingress.host) -}}
{{- fail "api.external.ingress.tls.enabled is true: set api.external.ingress.host (the certificate's host name)" -}}
{{- end -}}
{{- end -}}
{{- if ge (int .Values.tls.renewBeforeDays) (int .Values.tls.certValidityDays) -}}
{{- fail "tls.renewBeforeDays must be lower than tls.certValidityDays" -}}
{{- end -}}
{{- if and .Values.api.podDisruptionBudget.enabled (ge (int .Values.api.podDisruptionBudget.minAvailable) (int .Values.api.replicas)) -}}
{{- fail "api.podDisruptionBudget.minAvailable must be lower than api.replicas, or no control-plane pod could ever be evicted (node drains would hang): raise api.replicas" -}}
{{- end -}}
{{- end }}

{{/*
The operator configuration file (the format of operator/settings.py, FOUNDRY_OPERATOR_CONFIG). Empty strings are left
out: the operator then uses its own default.
*/}}
{{- define "foundry-inference.operatorConfig" -}}
{{- $v := .Values -}}
{{- $images := dict -}}
{{- range $role, $name := $v.images.roles -}}
{{- $_ := set $images $role (include "foundry-inference.image" (dict "ctx" $ "name" $name)) -}}
{{- end -}}
{{- $tls := dict "certValidityDays" (int $v.tls.certValidityDays) "renewBeforeDays" (int $v.tls.renewBeforeDays) -}}
{{- with $v.tls.secretName }}{{ $_ := set $tls "secretName" . }}{{ end -}}
{{- $ingress := dict "className" $v.ingress.className "annotations" ($v.ingress.annotations | default dict) -}}
{{- with $v.ingress.tlsSecretName }}{{ $_ := set $ingress "tlsSecretName" . }}{{ end -}}
{{- $source := $v.catalog.source | default "/etc/foundry/catalog/catalog.json" -}}
{{- $catalog := dict "source" $source "intervalSeconds" (int $v.catalog.syncIntervalSeconds) "timeoutSeconds" (int $v.catalog.timeoutSeconds) "lazyRegistrationEnabled" $v.catalog.lazyRegistrationEnabled -}}
{{- $_ := set $catalog "sourceType" ($v.catalog.sourceType | default "configmap") -}}
{{- with $v.catalog.azure -}}
{{- with .catalogUrl }}{{ $_ := set $catalog "azureCatalogUrl" . }}{{ end -}}
{{- with .registryUrl }}{{ $_ := set $catalog "azureRegistryUrl" . }}{{ end -}}
{{- with .region }}{{ $_ := set $catalog "azureRegion" . }}{{ end -}}
{{- end -}}
{{- with $v.catalog.mirror -}}
{{- with .registry }}{{ $_ := set $catalog "mirrorRegistry" . }}{{ end -}}
{{- with .repositoryPrefix }}{{ $_ := set $catalog "mirrorRepositoryPrefix" . }}{{ end -}}
{{- end -}}
{{- $store := dict "enabled" $v.storeModel.enabled -}}
{{- with $v.storeModel.storageClassName }}{{ $_ := set $store "storageClassName" . }}{{ end -}}
{{- with $v.storeModel.modelsVolumeSizeLimit }}{{ $_ := set $store "modelsVolumeSizeLimit" . }}{{ end -}}
{{- $_ := set $store "volumeSize" $v.storeModel.volumeSize -}}
{{- $_ := set $store "accessMode" $v.storeModel.accessMode -}}
{{- $_ := set $store "fetchBackoffLimit" (int $v.storeModel.fetchBackoffLimit) -}}
{{- $auth := dict "apiKeyEnabled" $v.apiKey.enabled "entraEnabled" $v.entraAuth.enabled -}}
{{- if $v.entraAuth.enabled -}}
{{- $_ := set $auth "tenantId" $v.entraAuth.tenantId -}}
{{- $_ := set $auth "clientId" $v.entraAuth.clientId -}}
{{- end -}}
{{- $cfg := dict
      "watch" (dict "namespaces" (include "foundry-inference.watchNamespaces" . | fromJsonArray))
      "operatorNamespace" .Release.Namespace
      "pollIntervalSeconds" $v.operator.pollIntervalSeconds
      "workers" (int $v.operator.workers)
      "progressDeadlineSeconds" (int $v.operator.progressDeadlineSeconds)
      "imagePullPolicy" $v.images.pullPolicy
      "images" $images
      "tls" $tls
      "ingress" $ingress
      "catalog" $catalog
      "storeModel" $store
      "authentication" $auth -}}
{{- with $v.api.config.registryAllowlist }}{{ $_ := set $cfg "registryAllowlist" . }}{{ end -}}
{{- with $v.registryTrust.caBundles }}{{ $_ := set $cfg "registryCAs" . }}{{ end -}}
{{- toYaml $cfg -}}
{{- end }}

{{/* The restricted container securityContext shared by the chart's containers. */}}
{{- define "foundry-inference.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ int .Values.podSecurity.runAsUser }}
runAsGroup: {{ int .Values.podSecurity.runAsGroup }}
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "foundry-inference.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.podSecurity.runAsUser }}
runAsGroup: {{ int .Values.podSecurity.runAsGroup }}
fsGroup: {{ int .Values.podSecurity.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A container's env: the chart's variables, then extraEnv; an extraEnv entry replaces the chart's variable of the same
name (a duplicate name would be refused by server-side apply). (dict "base" <list> "extra" <list>)
*/}}
{{- define "foundry-inference.env" -}}
{{- $override := list -}}
{{- range .extra }}{{ $override = append $override .name }}{{ end -}}
{{- $out := list -}}
{{- range .base }}{{ if not (has .name $override) }}{{ $out = append $out . }}{{ end }}{{ end -}}
{{- $out = concat $out .extra -}}
{{- toYaml $out -}}
{{- end }}
