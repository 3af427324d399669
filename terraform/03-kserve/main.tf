# KServe in the deployment mode var.kserve_deployment_mode chooses:
#   Knative:  Knative Serving (through the operator installed in stage 02) and KServe in
#             Knative mode; canaries are revisions with tag URLs on the Istio gateway.
#   Standard: no Knative Serving; KServe in Standard mode with the Gateway API, its HTTPRoutes
#             attached to the Gateway of gateway_api.tf (served by the same Istio gateway).
# Needs the KnativeServing CRD (stage 02) or the Gateway API CRDs (stage 01) at plan time,
# hence a stage of its own.

locals {
  knative  = var.kserve_deployment_mode == "Knative"
  standard = var.kserve_deployment_mode == "Standard"

  # Standard mode: the Gateway KServe attaches its HTTPRoutes to (gateway_api.tf).
  kserve_gateway = {
    namespace = "istio-system"
    name      = "kserve-ingress-gateway"
  }

  # Values of the kserve-resources chart (helm --set).
  kserve_values = merge(
    {
      "kserve.controller.deploymentMode" = var.kserve_deployment_mode

      # The storage initializer (an init container KServe adds for STORAGE_URI) takes its
      # securityContext from the default ClusterStorageContainer, not from the predictor; the
      # chart's default lacks only the seccomp profile that the restricted Pod Security
      # Standard requires of every container when the pod does not set it.
      "kserve.storage.containerSecurityContext.seccompProfile.type" = "RuntimeDefault"

      # Knative mode: the InferenceService URL is the Knative route's
      # (https://<name>-predictor.<namespace>.<domain>), which has a certificate. KServe's extra
      # top-level host would have none and would stay plain HTTP. (Standard mode makes no
      # VirtualServices either way.)
      "kserve.controller.gateway.disableIstioVirtualHost" = "true"

      # Both modes serve HTTPS on the gateway; status.url says so.
      "kserve.controller.gateway.urlScheme" = "https"
    },
    local.standard ? {
      # HTTPRoutes on the Gateway instead of Ingresses; hosts <name>-<namespace>.<domain>
      # (KServe's default domainTemplate), which the Gateway's wildcard certificate covers.
      "kserve.controller.gateway.ingressGateway.enableGatewayApi" = "true"
      "kserve.controller.gateway.ingressGateway.kserveGateway"    = "${local.kserve_gateway.namespace}/${local.kserve_gateway.name}"
      "kserve.controller.gateway.domain"                          = var.domain
    } : {}
  )
}

# The Knative resources were not counted before the mode existed.
moved {
  from = kubernetes_namespace_v1.knative_serving
  to   = kubernetes_namespace_v1.knative_serving[0]
}

moved {
  from = kubernetes_manifest.knative_serving
  to   = kubernetes_manifest.knative_serving[0]
}

resource "kubernetes_namespace_v1" "knative_serving" {
  count = local.knative ? 1 : 0

  metadata {
    name = "knative-serving"
  }
}

resource "kubernetes_manifest" "knative_serving" {
  count = local.knative ? 1 : 0

  manifest = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeServing"
    metadata = {
      name      = "knative-serving"
      namespace = kubernetes_namespace_v1.knative_serving[0].metadata[0].name
    }
    spec = {
      version = var.knative_serving_version
      config = {
        domain = {
          (var.domain) = ""
        }
        # HTTPS on the gateway: Knative's built-in cert-manager integration gets a certificate
        # for each route host (and its latest-/prev- tags) from the issuer below, and plain
        # HTTP answers with a redirect to HTTPS.
        network = {
          "external-domain-tls" = "Enabled"
          "http-protocol"       = "Redirected"
        }
        certmanager = {
          issuerRef = "kind: ClusterIssuer\nname: ${local.cluster_issuer}\n"
        }
        # Every pod-spec field the chart and the manifests set (tests/test_knative_fieldmask.py
        # checks each render against Knative's field masks): the GPU pool (affinity,
        # tolerations, nodeSelector) and the hardened pod (securityContext); secure pod
        # defaults for every other workload.
        features = {
          "kubernetes.podspec-affinity"        = "enabled"
          "kubernetes.podspec-tolerations"     = "enabled"
          "kubernetes.podspec-nodeselector"    = "enabled"
          "kubernetes.podspec-securitycontext" = "enabled"
          "secure-pod-defaults"                = "enabled"
        }
      }
    }
  }

  wait {
    condition {
      type   = "Ready"
      status = "True"
    }
  }

  timeouts {
    create = "15m"
    update = "15m"
  }

  # Knative's controller reads the issuer when it starts.
  depends_on = [kubernetes_manifest.gateway_ca_issuer]
}

resource "helm_release" "kserve" {
  name       = "kserve"
  repository = "oci://ghcr.io/kserve/charts"
  chart      = "kserve-resources"
  version    = var.kserve_version
  namespace  = "kserve"
  atomic     = true
  wait       = true

  dynamic "set" {
    for_each = local.kserve_values
    content {
      name  = set.key
      value = set.value
    }
  }

  # Knative mode: Knative Serving first. Standard mode: the Gateway its routes attach to.
  depends_on = [kubernetes_manifest.knative_serving, kubernetes_manifest.kserve_gateway]
}

# Namespace of the InferenceService; the deployer may manage objects in it but not create it.
resource "kubernetes_namespace_v1" "models" {
  metadata {
    name = var.predictor_namespace
    # Pod Security Admission: refuse pods that break the restricted profile as of Kubernetes
    # v1.33 (a cluster upgrade does not tighten it unannounced); warn and audit against the
    # newest profile so that a rule added later shows up before it is enforced.
    labels = {
      "pod-security.kubernetes.io/enforce"         = "restricted"
      "pod-security.kubernetes.io/enforce-version" = "v1.33"
      "pod-security.kubernetes.io/warn"            = "restricted"
      "pod-security.kubernetes.io/warn-version"    = "latest"
      "pod-security.kubernetes.io/audit"           = "restricted"
      "pod-security.kubernetes.io/audit-version"   = "latest"
    }
  }
}

# The Istio ingress gateway of stage 02: Knative's routes in Knative mode, the Gateway API
# Gateway in Standard mode; one address either way.
data "kubernetes_service_v1" "ingress" {
  metadata {
    name      = "istio-ingressgateway"
    namespace = "istio-system"
  }
}
