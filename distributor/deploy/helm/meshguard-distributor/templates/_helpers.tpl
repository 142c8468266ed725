{{/* Full name: the release name, with the chart name unless it already contains it. */}}
{{- define "mgd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mgd.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mgd.labels" -}}
{{ include "mgd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: distributor
app.kubernetes.io/part-of: meshguard
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mgd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mgd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The distributor's own SPIFFE ID, which the sidecar names in By=. */}}
{{- define "mgd.spiffeID" -}}
{{- default (printf "spiffe://%s/ns/%s/sa/%s" .Values.mesh.trustDomain .Release.Namespace (include "mgd.serviceAccountName" .)) .Values.mesh.spiffeID -}}
{{- end -}}

{{- define "mgd.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mgd.scheme" -}}
{{- if eq .Values.mesh.mode "spiffe" }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{/* Checks that fail the render with a clear message instead of a broken install. */}}
{{- define "mgd.validate" -}}
{{- if not (has .Values.mesh.mode (list "sidecar" "spiffe")) -}}
{{- fail (printf "mesh.mode %q: want sidecar or spiffe" .Values.mesh.mode) -}}
{{- end -}}
{{- if and (eq .Values.mesh.mode "spiffe") (not .Values.spiffe.csi.enabled) (not .Values.spiffe.secretName) -}}
{{- fail "mesh.mode spiffe needs an X509-SVID: spiffe.csi.enabled or spiffe.secretName" -}}
{{- end -}}
{{- if and .Values.spiffe.csi.enabled .Values.spiffe.secretName -}}
{{- fail "spiffe.csi.enabled and spiffe.secretName: choose one SVID source" -}}
{{- end -}}
{{- if not .Values.keys.secretName -}}
{{- fail "keys.secretName is required: a Secret with the public verify.jwk" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) .Values.persistence.enabled (not (has "ReadWriteMany" .Values.persistence.accessModes)) -}}
{{- fail "replicaCount > 1 cannot share a ReadWriteOnce data volume; see values-ha.yaml (persistence.enabled: false, storage.backend: oci)" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (eq .Values.storage.backend "filesystem") -}}
{{- fail "replicaCount > 1 needs storage.backend oci so every replica serves the same modules" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (eq .Values.state.backend "filesystem") -}}
{{- fail "replicaCount > 1 needs state.backend postgres so every replica serves the same bundles and writes one decision log" -}}
{{- end -}}
{{- if and (eq .Values.state.backend "postgres") (not .Values.state.postgres.url) -}}
{{- fail "state.backend postgres needs state.postgres.url" -}}
{{- end -}}
{{- if and (eq .Values.state.backend "postgres") (regexMatch "://[^/@]*:[^/@]*@" .Values.state.postgres.url) -}}
{{- fail "state.postgres.url must not hold a password: use state.postgres.passwordSecret" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.decisions.checkpointKeySecret.name) -}}
{{- fail "replicaCount > 1 needs decisions.checkpointKeySecret: every replica signs the one decision log's checkpoints with the same key" -}}
{{- end -}}
{{- if and (eq .Values.storage.backend "oci") (not .Values.storage.oci.registry) -}}
{{- fail "storage.backend oci needs storage.oci.registry" -}}
{{- end -}}
{{- end -}}

{{/* The distributor configuration (meshguard serve --config). */}}
{{- define "mgd.config" -}}
listen: {{ printf ":%d" (int .Values.service.port) | quote }}
data: /var/lib/meshguard
{{- if eq .Values.mesh.mode "sidecar" }}
# The sidecar terminates mTLS and forwards plain HTTP to the pod's port;
# STRICT PeerAuthentication keeps everything else out.
insecure_http: true
force_insecure: true
xfcc:
  trust: true
  by: {{ include "mgd.spiffeID" . | quote }}
{{- else }}
insecure_http: false
tls:
  {{- if .Values.spiffe.csi.enabled }}
  workload_socket: {{ printf "unix:///spiffe-workload-api/%s" .Values.spiffe.csi.socketFile | quote }}
  {{- else }}
  cert: /etc/meshguard/svid/svid.pem
  key: /etc/meshguard/svid/svid.key
  bundle: /etc/meshguard/svid/bundle.pem
  {{- end }}
  require_client_cert: false
{{- end }}
keys: {{ printf "/etc/meshguard/keys/%s" .Values.keys.key | quote }}
tokens:
  file: {{ if .Values.tokens.secretName }}{{ printf "/etc/meshguard/tokens/%s" .Values.tokens.key | quote }}{{ else }}""{{ end }}
  env: ""
allow:
  {{- range $action := list "read" "publish" "push" "ingest" "audit" "metrics" "registry" "attest" }}
  {{ $action }}: {{ index $.Values.allow $action | default list | toJson }}
  {{- end }}
bundles:
  retain: {{ int .Values.bundles.retain }}
  auto_channels: {{ .Values.bundles.autoChannels }}
  expiry_warning: {{ .Values.bundles.expiryWarning | quote }}
  channels:
    {{- range $name, $ch := .Values.bundles.channels }}
    {{ $name }}:
      scope: {{ $ch.scope | default "" | quote }}
    {{- else }} {}
    {{- end }}
registry:
  organisations: {{ .Values.registry.organisations | default list | toJson }}
  device_classes: {{ .Values.registry.deviceClasses | default dict | toJson }}
limits:
  bundle_bytes: {{ .Values.limits.bundleBytes | quote }}
  decisions_bytes: {{ .Values.limits.decisionsBytes | quote }}
  module_bytes: {{ .Values.limits.moduleBytes | quote }}
  ingest_rate: {{ .Values.limits.ingestRate }}
  ingest_burst: {{ int .Values.limits.ingestBurst }}
decisions:
  checkpoint_interval: {{ .Values.decisions.checkpointInterval | quote }}
  {{- if .Values.decisions.checkpointKeySecret.name }}
  checkpoint_key: {{ printf "/etc/meshguard/checkpoint/%s" .Values.decisions.checkpointKeySecret.key | quote }}
  {{- end }}
  proxy_bindings: {{ .Values.decisions.proxyBindings | default list | toJson }}
storage:
  backend: {{ .Values.storage.backend }}
  allow_delete: {{ .Values.storage.allowDelete }}
  {{- if eq .Values.storage.backend "oci" }}
  oci:
    registry: {{ .Values.storage.oci.registry | quote }}
    insecure: {{ .Values.storage.oci.insecure }}
    {{- with .Values.storage.oci.username }}
    username: {{ . | quote }}
    {{- end }}
    {{- if .Values.storage.oci.passwordSecret.name }}
    password_file: {{ printf "/etc/meshguard/registry/%s" .Values.storage.oci.passwordSecret.key | quote }}
    {{- end }}
    {{- if .Values.storage.oci.tokenSecret.name }}
    token_file: {{ printf "/etc/meshguard/registry-token/%s" .Values.storage.oci.tokenSecret.key | quote }}
    {{- end }}
    {{- if .Values.storage.oci.caSecret.name }}
    ca_file: {{ printf "/etc/meshguard/registry-ca/%s" .Values.storage.oci.caSecret.key | quote }}
    {{- end }}
    timeout: {{ .Values.storage.oci.timeout | quote }}
  {{- end }}
state:
  backend: {{ .Values.state.backend }}
  {{- if eq .Values.state.backend "postgres" }}
  postgres:
    url: {{ .Values.state.postgres.url | quote }}
    {{- if .Values.state.postgres.passwordSecret.name }}
    password_file: {{ printf "/etc/meshguard/postgres/%s" .Values.state.postgres.passwordSecret.key | quote }}
    {{- end }}
    sslmode: {{ .Values.state.postgres.sslmode | quote }}
    {{- if .Values.state.postgres.caSecret.name }}
    ca_file: {{ printf "/etc/meshguard/postgres-ca/%s" .Values.state.postgres.caSecret.key | quote }}
    {{- end }}
    max_conns: {{ int .Values.state.postgres.maxConns }}
  {{- end }}
shutdown_timeout: 20s
{{- end -}}
