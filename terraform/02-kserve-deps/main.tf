# KServe's Knative-mode dependencies, in the order of KServe's quick install:
# cert-manager -> Istio (base, istiod, ingress gateway) -> Knative Operator -> KServe CRDs.
# Stage 03-kserve needs the CRDs installed here at plan time.

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = var.cert_manager_version
  namespace        = "cert-manager"
  create_namespace = true
  atomic           = true
  wait             = true

  set {
    name  = "crds.enabled"
    value = "true"
  }
}

resource "helm_release" "istio_base" {
  name             = "istio-base"
  repository       = "https://istio-release.storage.googleapis.com/charts"
  chart            = "base"
  version          = var.istio_version
  namespace        = "istio-system"
  create_namespace = true
  atomic           = true

  set {
    name  = "defaultRevision"
    value = "default"
  }

  depends_on = [helm_release.cert_manager]
}

resource "helm_release" "istiod" {
  name       = "istiod"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "istiod"
  version    = var.istio_version
  namespace  = "istio-system"
  atomic     = true
  wait       = true

  set {
    name  = "proxy.autoInject"
    value = "disabled"
  }

  depends_on = [helm_release.istio_base]
}

# Knative's net-istio expects this release name (label istio=ingressgateway). It listens on
# 80 (HTTP, redirected to HTTPS by Knative) and 443 (HTTPS, certificates from stage 03).
resource "helm_release" "istio_ingressgateway" {
  name       = "istio-ingressgateway"
  repository = "https://istio-release.storage.googleapis.com/charts"
  chart      = "gateway"
  version    = var.istio_version
  namespace  = "istio-system"
  atomic     = true
  wait       = true

  # An internal passthrough Network Load Balancer: an address in the VPC, none on the internet.
  dynamic "set" {
    for_each = var.internal_load_balancer ? ["Internal"] : []
    content {
      name  = "service.annotations.networking\\.gke\\.io/load-balancer-type"
      value = set.value
    }
  }

  depends_on = [helm_release.istiod]
}

resource "helm_release" "knative_operator" {
  name             = "knative-operator"
  repository       = "https://knative.github.io/operator"
  chart            = "knative-operator"
  version          = var.knative_operator_version
  namespace        = "knative-operator"
  create_namespace = true
  atomic           = true
  wait             = true

  depends_on = [helm_release.istio_ingressgateway]
}

resource "helm_release" "kserve_crd" {
  name             = "kserve-crd"
  repository       = "oci://ghcr.io/kserve/charts"
  chart            = "kserve-crd"
  version          = var.kserve_version
  namespace        = "kserve"
  create_namespace = true
  atomic           = true

  depends_on = [helm_release.knative_operator]
}
