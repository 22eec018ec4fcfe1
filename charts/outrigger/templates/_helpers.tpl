{{/*
Names. Object names are capped at 63 characters (DNS labels), so every name
built on the full name leaves room for its longest suffix ("-operator-leader").
*/}}
{{- define "outrigger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "outrigger.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "outrigger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outrigger.operatorName" -}}
{{- printf "%s-operator" (include "outrigger.fullname" .) }}
{{- end }}

{{- define "outrigger.policyServiceName" -}}
{{- printf "%s-policy" (include "outrigger.fullname" .) }}
{{- end }}

{{- define "outrigger.webhookServiceName" -}}
{{- printf "%s-webhook" (include "outrigger.fullname" .) }}
{{- end }}

{{- define "outrigger.metricsServiceName" -}}
{{- printf "%s-metrics" (include "outrigger.fullname" .) }}
{{- end }}

{{- define "outrigger.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "outrigger.operatorName" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Standard labels. Call with (dict "root" $ "component" "operator").
*/}}
{{- define "outrigger.labels" -}}
helm.sh/chart: {{ include "outrigger.chart" .root }}
{{ include "outrigger.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: outrigger
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable across upgrades (a Deployment's selector is immutable),
so no version or chart label here.
*/}}
{{- define "outrigger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outrigger.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Images: repository@digest when a digest is given, else repository:tag (tag
defaults to the appVersion).
*/}}
{{- define "outrigger.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end }}

{{- define "outrigger.operatorImage" -}}
{{- include "outrigger.image" (dict "root" . "image" .Values.operator.image) -}}
{{- end }}

{{- define "outrigger.proxyImage" -}}
{{- include "outrigger.image" (dict "root" . "image" .Values.proxy.image) -}}
{{- end }}

{{/*
TLS. Secret names: the user's existingSecret, else the chart's own.
Call with (dict "root" $ "server" "policy"|"webhook").
*/}}
{{- define "outrigger.tlsExistingSecret" -}}
{{- if eq .server "policy" -}}
{{- .root.Values.policyServer.tls.existingSecret -}}
{{- else -}}
{{- .root.Values.injector.tls.existingSecret -}}
{{- end -}}
{{- end }}

{{- define "outrigger.tlsSecretName" -}}
{{- $existing := include "outrigger.tlsExistingSecret" . -}}
{{- if $existing -}}
{{- $existing -}}
{{- else -}}
{{- printf "%s-%s-tls" (include "outrigger.fullname" .root) .server -}}
{{- end -}}
{{- end }}

{{- define "outrigger.tlsServiceName" -}}
{{- if eq .server "policy" -}}
{{- include "outrigger.policyServiceName" .root -}}
{{- else -}}
{{- include "outrigger.webhookServiceName" .root -}}
{{- end -}}
{{- end }}

{{/*
outrigger.tlsMaterial: the certificate of one server as JSON
{"ca": ..., "crt": ..., "key": ..., "origin": "cluster"|"generated"} with
base64-encoded PEM values (the form Secret .data holds). Use only when that
server has no existingSecret.

- The Secret already in the cluster (Helm's lookup) is reused as it is, so an
  upgrade never rotates a certificate. Delete the Secret to get a new one on
  the next upgrade (see README, "TLS and rotation").
- Otherwise a CA and a certificate for the Service's DNS names are generated.

The result is memoized on the root context, so the Secret, the webhook's
caBundle and the Deployment's checksum annotation all see the same
certificate within one render, whichever template is rendered first. (Without
a cluster, e.g. `helm template`, lookup finds nothing and each render
generates new certificates.)
*/}}
{{- define "outrigger.tlsMaterial" -}}
{{- $root := .root -}}
{{- $server := .server -}}
{{- if not (hasKey $root "outriggerTLSMemo") -}}
{{- $_ := set $root "outriggerTLSMemo" dict -}}
{{- end -}}
{{- $memo := get $root "outriggerTLSMemo" -}}
{{- if not (hasKey $memo $server) -}}
{{- $secretName := include "outrigger.tlsSecretName" . -}}
{{- $found := lookup "v1" "Secret" $root.Release.Namespace $secretName -}}
{{- $data := dict -}}
{{- if $found -}}{{- $data = default dict $found.data -}}{{- end -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set $memo $server (dict "ca" (index $data "ca.crt") "crt" (index $data "tls.crt") "key" (index $data "tls.key") "origin" "cluster") -}}
{{- else -}}
{{- $ns := $root.Release.Namespace -}}
{{- $svc := include "outrigger.tlsServiceName" . -}}
{{- $days := int $root.Values.tls.validityDays -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $root.Values.clusterDomain) -}}
{{- $ca := genCA (printf "outrigger-%s-ca.%s" $server $ns) $days -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $names $days $ca -}}
{{- $_ := set $memo $server (dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "origin" "generated") -}}
{{- end -}}
{{- end -}}
{{- get $memo $server | toJson -}}
{{- end }}

{{/*
The webhook's caBundle (base64 PEM), or "" when cert-manager's CA injector
fills it in.
*/}}
{{- define "outrigger.webhookCABundle" -}}
{{- $tls := .Values.injector.tls -}}
{{- if not $tls.existingSecret -}}
{{- (include "outrigger.tlsMaterial" (dict "root" . "server" "webhook") | fromJson).ca -}}
{{- else if $tls.caBundle -}}
{{- $tls.caBundle | b64enc -}}
{{- else -}}
{{- $found := lookup "v1" "Secret" .Release.Namespace $tls.existingSecret -}}
{{- $ca := "" -}}
{{- if $found -}}{{- $ca = index (default dict $found.data) "ca.crt" | default "" -}}{{- end -}}
{{- if $ca -}}
{{- $ca -}}
{{- else if not (hasKey .Values.injector.webhookAnnotations "cert-manager.io/inject-ca-from") -}}
{{- fail (printf "injector.tls.existingSecret=%s: the webhook needs its CA. Set injector.tls.caBundle (PEM), create the Secret (with ca.crt) before installing, or let cert-manager inject it (injector.webhookAnnotations: cert-manager.io/inject-ca-from)" $tls.existingSecret) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Pod selector for the webhook entries: never the release namespace or the
excluded ones.
*/}}
{{- define "outrigger.excludedNamespaces" -}}
{{- $list := list .Release.Namespace -}}
{{- range .Values.injector.excludedNamespaces -}}
{{- if not (has . $list) -}}{{- $list = append $list . -}}{{- end -}}
{{- end -}}
{{- toJson $list -}}
{{- end }}

{{/*
The part both webhook entries share. Call with (dict "root" $ "caBundle" ...).
*/}}
{{- define "outrigger.webhookCommon" -}}
clientConfig:
  service:
    name: {{ include "outrigger.webhookServiceName" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: /inject
    port: 443
  {{- if .caBundle }}
  caBundle: {{ .caBundle }}
  {{- end }}
rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    scope: Namespaced
failurePolicy: {{ .root.Values.injector.failurePolicy }}
matchPolicy: Equivalent
sideEffects: None
admissionReviewVersions: [v1]
timeoutSeconds: {{ .root.Values.injector.timeoutSeconds }}
# Another webhook may add containers after ours: call ours again so they are
# seen (the operator skips pods it has already injected).
reinvocationPolicy: IfNeeded
{{- end }}
