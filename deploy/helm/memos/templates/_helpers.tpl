{{/* Names, labels and the memosd container, shared by both modes. */}}

{{- define "memos.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "memos.workloadName" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- printf "%s-vllm" (include "memos.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "memos.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "memos.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ ternary "engine" "memory" (eq .Values.mode "sidecar") }}
{{- end -}}

{{- define "memos.labels" -}}
{{ include "memos.selectorLabels" . }}
app.kubernetes.io/part-of: memos
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "memos.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "memos.fullname" .)) -}}
{{- end -}}

{{- define "memos.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "memos.fullname" .)) -}}
{{- end -}}

{{- define "memos.engineTokenSecret" -}}
{{- .Values.sidecar.engineToken.existingSecret | default (printf "%s-engine-token" (include "memos.fullname" .)) -}}
{{- end -}}

{{- define "memos.hasRedis" -}}
{{- if or .Values.redis.existingSecret .Values.redis.url -}}true{{- end -}}
{{- end -}}

{{/* Pod-level security: non-root, the runtime's default seccomp profile. */}}
{{- define "memos.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root, no privilege escalation, no capabilities. */}}
{{- define "memos.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
The memosd container. In sidecar mode it is a restartable init container (a native sidecar):
it starts, and passes its startup probe, before vLLM, and it is stopped after vLLM.
*/}}
{{- define "memos.memosdContainer" -}}
- name: memosd
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.mode "sidecar" }}
  restartPolicy: Always
  {{- end }}
  envFrom:
    - configMapRef:
        name: {{ include "memos.fullname" . }}
    {{- with .Values.objectStore.existingSecret }}
    - secretRef:
        name: {{ . }}
    {{- end }}
  env:
    - name: MEMOS_AUTH__TOKENS_FILE
      value: /etc/memos/auth/tokens.toml
    {{- if include "memos.kvShared" . }}
    # Same-host loads: vLLM reads KV chunk files from this directory instead of a stream.
    - name: MEMOS_ACTIVATION__SHARED_DIR
      value: /var/run/memos/kv-shared
    - name: MEMOS_ACTIVATION__SHARED_BUDGET_BYTES
      value: {{ .Values.sidecar.kvShared.budgetBytes | int64 | quote }}
    {{- end }}
    {{- if include "memos.hasRedis" . }}
    - name: MEMOS_REDIS_URL
      valueFrom:
        secretKeyRef:
          name: {{ include "memos.redisSecret" . }}
          key: url
    {{- end }}
  ports:
    - name: grpc
      containerPort: 50051
    - name: metrics
      containerPort: 9464
  startupProbe:
    grpc:
      port: 50051
    periodSeconds: 2
    failureThreshold: 90
  livenessProbe:
    grpc:
      port: 50051
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  readinessProbe:
    grpc:
      port: 50051
      service: memos.v1.MemCubeService
    periodSeconds: 5
    timeoutSeconds: 2
    failureThreshold: 2
  resources:
    {{- toYaml .Values.memosd.resources | nindent 4 }}
  securityContext:
    {{- include "memos.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: memos-data
      mountPath: /var/lib/memos
    {{- if eq .Values.mode "sidecar" }}
    - name: lora-adapters
      mountPath: /var/lib/memos/adapters
    {{- end }}
    - name: memos-auth
      mountPath: /etc/memos/auth
      readOnly: true
    - name: memosd-tmp
      mountPath: /tmp
    {{- if include "memos.kvShared" . }}
    - name: kv-shared
      mountPath: /var/run/memos/kv-shared
    {{- end }}
{{- end -}}

{{/* Non-empty when memosd shares KV chunk files with vLLM (sidecar mode only). */}}
{{- define "memos.kvShared" -}}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.kvShared.enabled -}}true{{- end -}}
{{- end -}}

{{- define "memos.memosdVolumes" -}}
- name: memos-data
  {{- if .Values.memosd.dataVolume.claimName }}
  persistentVolumeClaim:
    claimName: {{ .Values.memosd.dataVolume.claimName }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ .Values.memosd.dataVolume.sizeLimit }}
  {{- end }}
- name: memos-auth
  secret:
    secretName: {{ include "memos.authSecret" . }}
    defaultMode: 0440
    items:
      - key: tokens.toml
        path: tokens.toml
- name: memosd-tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "memos.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
