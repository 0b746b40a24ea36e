{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "lqo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lqo.fullname" -}}
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

{{- define "lqo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: lqo
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lqo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lqo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: collector
{{- end }}

{{- define "lqo.clickhouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lqo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: clickhouse
{{- end }}

{{- define "lqo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lqo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lqo.clickhouse.fullname" -}}
{{- printf "%s-clickhouse" (include "lqo.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the bundled ClickHouse's passwords (keys password, grafana-password). */}}
{{- define "lqo.clickhouse.secretName" -}}
{{- default (include "lqo.clickhouse.fullname" .) .Values.clickhouse.auth.existingSecret }}
{{- end }}

{{/* The clickhouse exporter's endpoint for storage.mode, with clear errors for what is missing. */}}
{{- define "lqo.storeEndpoint" -}}
{{- $mode := .Values.storage.mode }}
{{- if eq $mode "embedded" }}
{{- "embedded:///var/lib/lqo/data/clickhouse" }}
{{- else if eq $mode "clickhouse" }}
{{- printf "http://%s:8123" (include "lqo.clickhouse.fullname" .) }}
{{- else }}
{{- required "storage.external.endpoint: set it to your ClickHouse server's http(s)://HOST:PORT (storage.mode is external)" .Values.storage.external.endpoint }}
{{- end }}
{{- end }}

{{/* The collector's config: the chart's part, then .Values.config over it. */}}
{{- define "lqo.config" -}}
{{- $clickhouse := dict "endpoint" (include "lqo.storeEndpoint" .) "ttl" .Values.storage.ttl "rollup_ttl" .Values.storage.rollupTtl }}
{{- if eq .Values.storage.mode "external" }}
{{- $_ := set $clickhouse "database" .Values.storage.external.database }}
{{- with .Values.storage.external.clusterName }}
{{- $_ := set $clickhouse "cluster_name" . }}
{{- end }}
{{- end }}
{{- $grpc := dict "endpoint" "0.0.0.0:4317" }}
{{- $http := dict "endpoint" "0.0.0.0:4318" }}
{{- $metrics := dict "address" "0.0.0.0:8888" }}
{{- $service := dict "telemetry" (dict "metrics" $metrics) }}
{{- $base := dict
      "receivers" (dict "otlp" (dict "protocols" (dict "grpc" $grpc "http" $http)))
      "exporters" (dict "clickhouse" $clickhouse "prometheus" (dict))
      "service" $service }}
{{- if .Values.tls.existingSecret }}
{{- $tls := dict "cert_file" "/etc/lqo-tls/tls.crt" "key_file" "/etc/lqo-tls/tls.key" "reload_interval" .Values.tls.reloadInterval }}
{{- if .Values.tls.clientAuth }}
{{- $_ := set $tls "client_ca_file" "/etc/lqo-tls/ca.crt" }}
{{- end }}
{{- $_ := set $grpc "tls" $tls }}
{{- $_ := set $http "tls" (deepCopy $tls) }}
{{- else if .Values.tls.clientAuth }}
{{- fail "tls.clientAuth: needs tls.existingSecret (a kubernetes.io/tls Secret whose ca.crt signs the clients' certificates)" }}
{{- end }}
{{- $extensions := dict }}
{{- if and .Values.sendingQueue.persistent (ne .Values.storage.mode "embedded") }}
{{- $_ := set $extensions "file_storage" (dict "directory" (ternary "/var/lib/lqo/queue" "/var/lib/lqo/data/storage" (eq (include "lqo.workloadKind" .) "StatefulSet"))) }}
{{- $_ := set $clickhouse "sending_queue" (dict "storage" "file_storage" "queue_size" .Values.sendingQueue.queueSize "max_bytes" .Values.sendingQueue.maxBytes) }}
{{- $_ := set $clickhouse "retry_on_failure" (dict "max_elapsed_time" 0) }}
{{- end }}
{{- if .Values.auth.existingSecret }}
{{- $_ := set $extensions "bearertokenauth" (dict "filename" (printf "/etc/lqo-auth/%s" .Values.auth.key)) }}
{{- $_ := set $grpc "auth" (dict "authenticator" "bearertokenauth") }}
{{- $_ := set $http "auth" (dict "authenticator" "bearertokenauth") }}
{{- end }}
{{- if .Values.auth.query.existingSecret }}
{{- $_ := set $extensions "bearertokenauth/query" (dict "filename" (printf "/etc/lqo-query-auth/%s" .Values.auth.query.key)) }}
{{- $_ := set $http "query_auth" (dict "authenticator" "bearertokenauth/query") }}
{{- end }}
{{- if .Values.metrics.tls }}
{{- if not .Values.tls.existingSecret }}
{{- fail "metrics.tls: needs tls.existingSecret (the kubernetes.io/tls Secret the receivers use, which /metrics then serves too)" }}
{{- end }}
{{- $_ := set $metrics "tls" (dict "cert_file" "/etc/lqo-tls/tls.crt" "key_file" "/etc/lqo-tls/tls.key" "reload_interval" .Values.tls.reloadInterval) }}
{{- end }}
{{- if .Values.metrics.auth.existingSecret }}
{{- $_ := set $extensions "bearertokenauth/metrics" (dict "filename" (printf "/etc/lqo-metrics-auth/%s" .Values.metrics.auth.key)) }}
{{- $_ := set $metrics "auth" (dict "authenticator" "bearertokenauth/metrics") }}
{{- end }}
{{- if $extensions }}
{{- $_ := set $base "extensions" $extensions }}
{{- $_ := set $service "extensions" (keys $extensions | sortAlpha) }}
{{- end }}
{{- toYaml (mergeOverwrite $base (deepCopy .Values.config)) }}
{{- end }}

{{/* The Secret and keys with the collector's ClickHouse user; empty under storage.mode embedded. */}}
{{- define "lqo.credentialsEnv" -}}
{{- if eq .Values.storage.mode "clickhouse" }}
- name: LQO_CLICKHOUSE_USERNAME
  value: {{ .Values.clickhouse.auth.username | quote }}
- name: LQO_CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "lqo.clickhouse.secretName" . }}
      key: password
{{- else if eq .Values.storage.mode "external" }}
{{- $secret := required "storage.external.existingSecret: name a Secret with the keys username and password for ClickHouse (storage.mode is external)" .Values.storage.external.existingSecret }}
- name: LQO_CLICKHOUSE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: username
- name: LQO_CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: password
{{- end }}
{{- end }}

{{/* The volumes with the receivers' token and certificate Secrets (mounted whole, without
subPath, so that the kubelet's updates reach the collector, which re-reads them). */}}
{{- define "lqo.securityVolumes" -}}
{{- if .Values.auth.existingSecret }}
- name: auth
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.auth.query.existingSecret }}
- name: query-auth
  secret:
    secretName: {{ .Values.auth.query.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.metrics.auth.existingSecret }}
- name: metrics-auth
  secret:
    secretName: {{ .Values.metrics.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The collectors' controller: a StatefulSet when each keeps its sending queue on a claim of its
own (sendingQueue.volume claim, with a ClickHouse server), else a Deployment. */}}
{{- define "lqo.workloadKind" -}}
{{- if and (ne .Values.storage.mode "embedded") .Values.sendingQueue.persistent (eq .Values.sendingQueue.volume "claim") -}}
StatefulSet
{{- else -}}
Deployment
{{- end }}
{{- end }}
