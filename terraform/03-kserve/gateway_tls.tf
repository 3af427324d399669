# The issuer of the gateway's certificates, in both modes: Knative's per-route certificates
# (main.tf) or the Gateway's wildcard certificate (gateway_api.tf, Standard mode). Without
# var.cluster_issuer, a private CA made here: a self-signed issuer signs a CA certificate, and
# a CA issuer signs with it. Clients must trust that CA (cert-manager/torch-predictor-ca, key
# ca.crt; docs/deploy.md). cert-manager and its CRDs come from stage 02, so these manifests plan.

locals {
  self_signed_ca = var.cluster_issuer == ""
  cluster_issuer = local.self_signed_ca ? "torch-predictor-ca" : var.cluster_issuer
}

resource "kubernetes_manifest" "selfsigned_issuer" {
  count = local.self_signed_ca ? 1 : 0

  manifest = {
    apiVersion = "cert-manager.io/v1"
    kind       = "ClusterIssuer"
    metadata = {
      name = "torch-predictor-selfsigned"
    }
    spec = {
      selfSigned = {}
    }
  }
}

# A ClusterIssuer's CA secret lives in cert-manager's own namespace.
resource "kubernetes_manifest" "gateway_ca" {
  count = local.self_signed_ca ? 1 : 0

  manifest = {
    apiVersion = "cert-manager.io/v1"
    kind       = "Certificate"
    metadata = {
      name      = "torch-predictor-ca"
      namespace = "cert-manager"
    }
    spec = {
      isCA       = true
      commonName = "torch-predictor gateway CA"
      secretName = "torch-predictor-ca"
      # Clients pin this CA: five years, so that a renewal does not surprise them.
      duration    = "43800h"
      renewBefore = "720h"
      privateKey = {
        algorithm = "ECDSA"
        size      = 256
      }
      issuerRef = {
        group = "cert-manager.io"
        kind  = "ClusterIssuer"
        name  = kubernetes_manifest.selfsigned_issuer[0].manifest.metadata.name
      }
    }
  }
}

resource "kubernetes_manifest" "gateway_ca_issuer" {
  count = local.self_signed_ca ? 1 : 0

  manifest = {
    apiVersion = "cert-manager.io/v1"
    kind       = "ClusterIssuer"
    metadata = {
      name = local.cluster_issuer
    }
    spec = {
      ca = {
        secretName = kubernetes_manifest.gateway_ca[0].manifest.spec.secretName
      }
    }
  }

  wait {
    condition {
      type   = "Ready"
      status = "True"
    }
  }
}
