# Knative Serving (through the operator installed in stage 02) and KServe itself.
# Needs the KnativeServing CRD at plan time, hence a stage of its own.

resource "kubernetes_namespace_v1" "knative_serving" {
  metadata {
    name = "knative-serving"
  }
}

resource "kubernetes_manifest" "knative_serving" {
  manifest = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeServing"
    metadata = {
      name      = "knative-serving"
      namespace = kubernetes_namespace_v1.knative_serving.metadata[0].name
    }
    spec = {
      version = var.knative_serving_version
      config = {
        domain = {
          (var.domain) = ""
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
}

resource "helm_release" "kserve" {
  name       = "kserve"
  repository = "oci://ghcr.io/kserve/charts"
  chart      = "kserve-resources"
  version    = var.kserve_version
  namespace  = "kserve"
  atomic     = true
  wait       = true

  set {
    name  = "kserve.controller.deploymentMode"
    value = "Knative"
  }

  depends_on = [kubernetes_manifest.knative_serving]
}

# Namespace of the InferenceService; the deployer may manage objects in it but not create it.
resource "kubernetes_namespace_v1" "models" {
  metadata {
    name = var.predictor_namespace
  }
}

data "kubernetes_service_v1" "ingress" {
  metadata {
    name      = "istio-ingressgateway"
    namespace = "istio-system"
  }
}
