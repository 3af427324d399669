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

  set {
    name  = "kserve.controller.deploymentMode"
    value = "Knative"
  }

  # The storage initializer (an init container KServe adds for STORAGE_URI) takes its
  # securityContext from the default ClusterStorageContainer, not from the predictor; the
  # chart's default lacks only the seccomp profile that the restricted Pod Security
  # Standard requires of every container when the pod does not set it.
  set {
    name  = "kserve.storage.containerSecurityContext.seccompProfile.type"
    value = "RuntimeDefault"
  }

  # The InferenceService URL is the Knative route's (https://<name>-predictor.<namespace>.<domain>),
  # which has a certificate. KServe's extra top-level host would have none and would stay
  # plain HTTP.
  set {
    name  = "kserve.controller.gateway.disableIstioVirtualHost"
    value = "true"
  }

  set {
    name  = "kserve.controller.gateway.urlScheme"
    value = "https"
  }

  depends_on = [kubernetes_manifest.knative_serving]
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

data "kubernetes_service_v1" "ingress" {
  metadata {
    name      = "istio-ingressgateway"
    namespace = "istio-system"
  }
}
