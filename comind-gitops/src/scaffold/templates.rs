//! The chart's files. Values hold what differs per application and environment; the
//! templates are the same for every application Comind scaffolds.

/// `Chart.yaml`.
pub(super) fn chart_yaml(name: &str, team: &str, app_version: &str) -> String {
    format!(
        "apiVersion: v2\n\
         name: {name}\n\
         description: {name} of team {team}, scaffolded by `comind app new`.\n\
         type: application\n\
         version: 0.1.0\n\
         appVersion: \"{app_version}\"\n"
    )
}

/// `values.yaml`: what every environment shares.
pub(super) fn values_yaml(
    repository: &str,
    tag: &str,
    port: u16,
    secrets: &[String],
    ingress_class: &str,
    ingress_cidr: Option<&str>,
) -> String {
    let env_from = if secrets.is_empty() {
        "envFrom: []\n".to_string()
    } else {
        let mut text = String::from(
            "# The platform services' connection settings (DATABASE_URL, REDIS_URL, ...),\n\
             # one Secret per service in every application namespace.\n\
             envFrom:\n",
        );
        for secret in secrets {
            text.push_str(&format!("  - secretRef:\n      name: {secret}\n"));
        }
        text
    };
    let ingress_from = match ingress_cidr {
        // The AWS Load Balancer Controller's ALB sends to Pod IPs from inside the VPC.
        Some(cidr) => format!("  # The load balancer's addresses: the VPC's range.\n  ingressCidr: {cidr}\n"),
        None => "  ingressNamespace: kube-system\n  ingressPodLabels:\n    app.kubernetes.io/name: traefik\n"
            .to_string(),
    };
    format!(
        "# Values every environment shares; values-<env>.yaml overrides them.\n\
         image:\n  repository: {repository}\n  tag: \"{tag}\"\n  pullPolicy: IfNotPresent\n\n\
         replicaCount: 1\n\n\
         containerPort: {port}\n\n\
         service:\n  port: 80\n\n\
         ingress:\n  enabled: true\n  className: {ingress_class}\n  host: \"\"\n\n\
         {env_from}\n\
         probes:\n  path: /\n\n\
         resources:\n  requests:\n    cpu: 50m\n    memory: 64Mi\n  limits:\n    cpu: 500m\n    memory: 256Mi\n\n\
         autoscaling:\n  enabled: false\n  minReplicas: 2\n  maxReplicas: 10\n  targetCPUUtilizationPercentage: 70\n\n\
         # The platform's ingress controller, admitted by the NetworkPolicy.\n\
         networkPolicy:\n{ingress_from}  servicePorts: [5432, 6379, 9000, 9324, 443]\n"
    )
}

/// `values-<env>.yaml`.
pub(super) fn environment_values(environment: &str, host: &str, production: bool) -> String {
    let scaling = if production {
        "# Production: two to ten replicas, scaled on CPU.\n\
         autoscaling:\n  enabled: true\n  minReplicas: 2\n  maxReplicas: 10\n  targetCPUUtilizationPercentage: 70\n\n\
         resources:\n  requests:\n    cpu: 100m\n    memory: 128Mi\n  limits:\n    cpu: \"1\"\n    memory: 512Mi\n"
    } else {
        "# One replica and no autoscaler outside production.\n\
         replicaCount: 1\n\n\
         autoscaling:\n  enabled: false\n"
    };
    format!("# Environment {environment}.\ningress:\n  host: {host}\n\n{scaling}")
}

/// The templates, by file name under `templates/`.
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    ("_helpers.tpl", HELPERS),
    ("deployment.yaml", DEPLOYMENT),
    ("service.yaml", SERVICE),
    ("ingress.yaml", INGRESS),
    ("hpa.yaml", HPA),
    ("serviceaccount.yaml", SERVICE_ACCOUNT),
    ("networkpolicy.yaml", NETWORK_POLICY),
    ("NOTES.txt", NOTES),
];

const HELPERS: &str = r#"{{/* The application's name: the release name Argo CD gives it (<team>-<app>). */}}
{{- define "app.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "app.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "app.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "app.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "app.selector" . | nindent 8 }}
    spec:
      serviceAccountName: {{ include "app.fullname" . }}
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ .Values.containerPort }}
              protocol: TCP
          {{- with .Values.envFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities:
              drop: ["ALL"]
          livenessProbe:
            httpGet:
              path: {{ .Values.probes.path }}
              port: http
            initialDelaySeconds: 10
            periodSeconds: 10
          readinessProbe:
            httpGet:
              path: {{ .Values.probes.path }}
              port: http
            periodSeconds: 5
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        # The root filesystem is read-only: a writable /tmp of its own.
        - name: tmp
          emptyDir: {}
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "app.selector" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
"#;

const INGRESS: &str = r#"{{- if and .Values.ingress.enabled .Values.ingress.host }}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
spec:
  ingressClassName: {{ .Values.ingress.className }}
  rules:
    - host: {{ .Values.ingress.host | quote }}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {{ include "app.fullname" . }}
                port:
                  name: http
{{- end }}
"#;

const HPA: &str = r#"{{- if .Values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "app.fullname" . }}
  minReplicas: {{ .Values.autoscaling.minReplicas }}
  maxReplicas: {{ .Values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .Values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
"#;

const SERVICE_ACCOUNT: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
automountServiceAccountToken: false
"#;

const NETWORK_POLICY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "app.selector" . | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  ingress:
    # The platform's ingress controller.
    - from:
        {{- if .Values.networkPolicy.ingressCidr }}
        - ipBlock:
            cidr: {{ .Values.networkPolicy.ingressCidr }}
        {{- else }}
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ .Values.networkPolicy.ingressNamespace }}
          podSelector:
            matchLabels:
              {{- toYaml .Values.networkPolicy.ingressPodLabels | nindent 14 }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
  egress:
    # Cluster DNS.
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    # The platform services (containers on the Docker network locally, managed
    # services on AWS): their ports, wherever they are.
    - ports:
        {{- range .Values.networkPolicy.servicePorts }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
"#;

const NOTES: &str = r#"{{ include "app.fullname" . }} is deployed by Argo CD from the GitOps repository.
{{- if and .Values.ingress.enabled .Values.ingress.host }}

It answers at http://{{ .Values.ingress.host }} (through the {{ .Values.ingress.className }} ingress).
{{- end }}
"#;
