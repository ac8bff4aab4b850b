{{/*
One of the suite's services: its Deployment, PodDisruptionBudget and
HorizontalPodAutoscaler. Called with a dict:
  root     the chart's context
  name     gateway, orders or fulfillment
  port     its HTTP port (HTTP_ADDR)
  env      its own literal variables (a dict), which the values' env may override
  backends true for the services that use PostgreSQL, Redis and RabbitMQ
Every variable set here is one the project README documents.
*/}}
{{- define "ordertrace.workload" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .name -}}
{{- $sel := dict "root" $root "component" .name -}}
{{- $fullname := printf "%s-%s" (include "ordertrace.fullname" $root) .name -}}
{{- $tel := $root.Values.telemetry -}}
{{- $scheme := ternary "https" "http" $tel.secure.enabled -}}
{{- $otlpPort := ternary 4317 4318 (eq $tel.protocol "grpc") -}}
{{- $env := dict
  "HTTP_ADDR" (printf ":%d" (int .port))
  "LOG_LEVEL" $root.Values.logLevel
  "SHUTDOWN_TIMEOUT" (printf "%ds" (int $root.Values.shutdownTimeoutSeconds))
  "OTEL_EXPORTER_OTLP_ENDPOINT" (printf "%s://%s:%d" $scheme $tel.collectorServiceName (int $otlpPort))
  "OTEL_EXPORTER_OTLP_PROTOCOL" $tel.protocol
  "OTEL_RESOURCE_ATTRIBUTES" (printf "deployment.environment.name=%s" $tel.environment)
  "OTEL_TRACES_SAMPLER_ARG" (toString $tel.samplerArg)
-}}
{{- with $tel.priorityTenants }}{{ $_ := set $env "PRIORITY_TENANTS" . }}{{ end }}
{{- if $tel.secure.enabled }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_CERTIFICATE" "/etc/ordertrace/certs/ca.crt" }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" "/etc/ordertrace/certs/client.crt" }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_CLIENT_KEY" "/etc/ordertrace/certs/client.key" }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_COMPRESSION" "gzip" }}
{{- end }}
{{- $env = mergeOverwrite $env .env (default dict $v.env) -}}
{{- range $name := list "DATABASE_URL" "REDIS_URL" "AMQP_URL" "OTEL_EXPORTER_OTLP_HEADERS" }}
{{- if hasKey $env $name }}{{ fail (printf "%s.env.%s: the chart sets %s from a Secret" $.name $name $name) }}{{ end }}
{{- end }}
{{- $secret := index $tel.secure.serviceSecrets .name -}}
{{- $grace := add $root.Values.preStopSleepSeconds $root.Values.shutdownTimeoutSeconds 5 5 -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "ordertrace.labels" $sel | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ordertrace.selectorLabels" $sel | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate: { maxSurge: 1, maxUnavailable: 0 }
  template:
    metadata:
      labels:
        {{- include "ordertrace.labels" $sel | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532 # distroless "nonroot", the image's USER
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      # The shutdown: pre-stop pause, SHUTDOWN_TIMEOUT for requests in flight,
      # 5 s to flush telemetry, 5 s of margin.
      terminationGracePeriodSeconds: {{ $grace }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "ordertrace.selectorLabels" $sel | nindent 14 }}
      containers:
        - name: {{ .name }}
          image: {{ include "ordertrace.image" (dict "root" $root "service" .name) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          env:
            {{- range $name, $value := $env }}
            - name: {{ $name }}
              value: {{ $value | toString | quote }}
            {{- end }}
            {{- if .backends }}
            {{- include "ordertrace.backendEnv" (dict "root" $root "name" "DATABASE_URL" "backend" "postgres" "key" "database-url") | nindent 12 }}
            {{- include "ordertrace.backendEnv" (dict "root" $root "name" "REDIS_URL" "backend" "redis" "key" "redis-url") | nindent 12 }}
            {{- include "ordertrace.backendEnv" (dict "root" $root "name" "AMQP_URL" "backend" "rabbitmq" "key" "amqp-url") | nindent 12 }}
            {{- end }}
            {{- if $tel.secure.enabled }}
            - name: OTEL_EXPORTER_OTLP_HEADERS
              valueFrom:
                secretKeyRef:
                  name: {{ $secret }}
                  key: headers
            {{- end }}
          startupProbe:
            httpGet: { path: /healthz, port: http }
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet: { path: /healthz, port: http }
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 3
          readinessProbe:
            httpGet: { path: /readyz, port: http }
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          {{- if gt (int $root.Values.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $root.Values.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "ordertrace.containerSecurity" . | nindent 12 }}
          {{- if $tel.secure.enabled }}
          volumeMounts:
            - name: otlp-certs
              mountPath: /etc/ordertrace/certs
              readOnly: true
          {{- end }}
      {{- if $tel.secure.enabled }}
      volumes:
        - name: otlp-certs
          secret:
            secretName: {{ $secret }}
            defaultMode: 0440
            items:
              - { key: ca.crt, path: ca.crt }
              - { key: client.crt, path: client.crt }
              - { key: client.key, path: client.key }
      {{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "ordertrace.labels" $sel | nindent 4 }}
spec:
  maxUnavailable: {{ $v.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ordertrace.selectorLabels" $sel | nindent 6 }}
{{- if $v.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "ordertrace.labels" $sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}
