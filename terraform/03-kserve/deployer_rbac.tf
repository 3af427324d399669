# What the delivery workflow's accounts may do inside the cluster. Their Google roles give
# them credentials only (roles/container.clusterViewer, stage 01); these namespaced Roles are
# all they may change. GKE names a Google service account's requests by its email.

locals {
  github_account_email = {
    for name in ["canary", "promoter"] : name => "github-${name}@${var.project_id}.iam.gserviceaccount.com"
  }
}

# canary: first install with Helm (the chart's objects and Helm's release records, which
# are Secrets: the namespace holds no other Secrets, the predictor reads models through
# Workload Identity), canary start, smoke test and rollback.
resource "kubernetes_role_v1" "canary" {
  metadata {
    name      = "github-canary"
    namespace = kubernetes_namespace_v1.models.metadata[0].name
  }

  rule {
    api_groups = ["serving.kserve.io"]
    resources  = ["inferenceservices"]
    verbs      = ["get", "list", "watch", "create", "update", "patch"]
  }

  rule {
    api_groups = [""]
    resources  = ["secrets"]
    verbs      = ["get", "list", "create", "update", "patch", "delete"]
  }

  # Helm deletes what a new chart version or values no longer render (and the helm test
  # NetworkPolicy before it recreates it); an InferenceService is never deleted.
  rule {
    api_groups = [""]
    resources  = ["serviceaccounts"]
    verbs      = ["get", "list", "create", "update", "patch", "delete"]
  }

  rule {
    api_groups = ["networking.k8s.io"]
    resources  = ["networkpolicies"]
    verbs      = ["get", "list", "create", "update", "patch", "delete"]
  }

  # Standard mode: a canary has no URL of its own on the gateway, so the smoke test and the
  # analysis reach its Service through the API server's service proxy
  # (/api/v1/namespaces/<ns>/services/<svc>:80/proxy/...): GET is get, POST is create.
  rule {
    api_groups = [""]
    resources  = ["services/proxy"]
    verbs      = ["get", "create"]
  }
}

# promoter: moves traffic of an existing InferenceService, nothing else.
resource "kubernetes_role_v1" "promoter" {
  metadata {
    name      = "github-promoter"
    namespace = kubernetes_namespace_v1.models.metadata[0].name
  }

  rule {
    api_groups = ["serving.kserve.io"]
    resources  = ["inferenceservices"]
    verbs      = ["get", "list", "watch", "patch"]
  }
}

# Both find the ingress gateway's address for the smoke test and the analysis.
resource "kubernetes_role_v1" "gateway_reader" {
  metadata {
    name      = "github-gateway-reader"
    namespace = "istio-system"
  }

  rule {
    api_groups     = [""]
    resources      = ["services"]
    resource_names = ["istio-ingressgateway"]
    verbs          = ["get"]
  }
}

# canary: the first install passes KServe's default deployment mode (key "deploy") to the
# chart. The ConfigMap holds no secrets; only it may be read, and only in KServe's namespace
# (created by stage 02).
resource "kubernetes_role_v1" "kserve_config_reader" {
  metadata {
    name      = "github-kserve-config-reader"
    namespace = "kserve"
  }

  rule {
    api_groups     = [""]
    resources      = ["configmaps"]
    resource_names = ["inferenceservice-config"]
    verbs          = ["get"]
  }
}

# Each account its own Role.
resource "kubernetes_role_binding_v1" "github" {
  for_each = {
    canary   = kubernetes_role_v1.canary
    promoter = kubernetes_role_v1.promoter
  }

  metadata {
    name      = each.value.metadata[0].name
    namespace = each.value.metadata[0].namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = each.value.metadata[0].name
  }
  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "User"
    name      = local.github_account_email[each.key]
  }
}

resource "kubernetes_role_binding_v1" "gateway_reader" {
  metadata {
    name      = "github-gateway-reader"
    namespace = kubernetes_role_v1.gateway_reader.metadata[0].namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.gateway_reader.metadata[0].name
  }
  dynamic "subject" {
    for_each = local.github_account_email
    content {
      api_group = "rbac.authorization.k8s.io"
      kind      = "User"
      name      = subject.value
    }
  }
}

resource "kubernetes_role_binding_v1" "kserve_config_reader" {
  metadata {
    name      = kubernetes_role_v1.kserve_config_reader.metadata[0].name
    namespace = kubernetes_role_v1.kserve_config_reader.metadata[0].namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.kserve_config_reader.metadata[0].name
  }
  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "User"
    name      = local.github_account_email["canary"]
  }
}
