# Standard mode only: the Gateway API Gateway that KServe's HTTPRoutes attach to
# (kserve.controller.gateway.ingressGateway.kserveGateway in main.tf), with HTTPS from the
# same issuer as Knative's certificates (gateway_tls.tf) and plain HTTP redirected to HTTPS.
#
# Its class is Istio's: istiod (stage 02) creates GatewayClass "istio" once the Gateway API
# CRDs exist (GKE installs them with gateway_api_channel = "CHANNEL_STANDARD" in stage 01).
# GKE's own classes would not do: KServe's HTTPRoutes match paths by regular expression, which
# GKE's load balancers do not support. The Gateway is linked to the ingress gateway of stage
# 02 (Istio's manual deployment: spec.addresses names its Service) instead of having Istio
# deploy another proxy and load balancer, so both modes answer on one address, internal or
# external as stage 02 chose, and the chart's NetworkPolicy (gatewayNamespaces: istio-system)
# admits it. The CRDs must exist at plan time, as the KnativeServing CRD must in Knative mode.

locals {
  kserve_gateway_tls_secret = "kserve-ingress-gateway-tls"
}

# A wildcard certificate: KServe names Standard-mode hosts <name>-<namespace>.<domain> (the
# InferenceService) and <name>-predictor-<namespace>.<domain> (its predictor), one label under
# the domain. With an ACME var.cluster_issuer that takes a DNS-01 solver.
resource "kubernetes_manifest" "kserve_gateway_certificate" {
  count = local.standard ? 1 : 0

  manifest = {
    apiVersion = "cert-manager.io/v1"
    kind       = "Certificate"
    metadata = {
      name      = local.kserve_gateway.name
      namespace = local.kserve_gateway.namespace
    }
    spec = {
      secretName = local.kserve_gateway_tls_secret
      dnsNames   = ["*.${var.domain}"]
      privateKey = {
        algorithm = "ECDSA"
        size      = 256
      }
      issuerRef = {
        group = "cert-manager.io"
        kind  = "ClusterIssuer"
        name  = local.cluster_issuer
      }
    }
  }

  depends_on = [kubernetes_manifest.gateway_ca_issuer]
}

# Defaults the API server would add are spelled out: kubernetes_manifest would otherwise see
# them appear after apply.
resource "kubernetes_manifest" "kserve_gateway" {
  count = local.standard ? 1 : 0

  manifest = {
    apiVersion = "gateway.networking.k8s.io/v1"
    kind       = "Gateway"
    metadata = {
      name      = local.kserve_gateway.name
      namespace = local.kserve_gateway.namespace
    }
    spec = {
      gatewayClassName = "istio"
      addresses = [
        {
          type  = "Hostname"
          value = "${data.kubernetes_service_v1.ingress.metadata[0].name}.${data.kubernetes_service_v1.ingress.metadata[0].namespace}.svc.cluster.local"
        }
      ]
      listeners = [
        # Plain HTTP carries only the redirect below (routes of this namespace only).
        {
          name     = "http"
          protocol = "HTTP"
          port     = 80
          hostname = "*.${var.domain}"
          allowedRoutes = {
            namespaces = {
              from = "Same"
            }
          }
        },
        # HTTPS for the InferenceServices of the predictor namespace, and of no other.
        {
          name     = "https"
          protocol = "HTTPS"
          port     = 443
          hostname = "*.${var.domain}"
          tls = {
            mode = "Terminate"
            certificateRefs = [
              {
                group = ""
                kind  = "Secret"
                name  = kubernetes_manifest.kserve_gateway_certificate[0].manifest.spec.secretName
              }
            ]
          }
          allowedRoutes = {
            namespaces = {
              from = "Selector"
              selector = {
                matchLabels = {
                  "kubernetes.io/metadata.name" = kubernetes_namespace_v1.models.metadata[0].name
                }
              }
            }
          }
        },
      ]
    }
  }
}

# As Knative's "http-protocol: Redirected": plain HTTP answers with a redirect to HTTPS.
resource "kubernetes_manifest" "kserve_gateway_https_redirect" {
  count = local.standard ? 1 : 0

  manifest = {
    apiVersion = "gateway.networking.k8s.io/v1"
    kind       = "HTTPRoute"
    metadata = {
      name      = "${local.kserve_gateway.name}-https-redirect"
      namespace = local.kserve_gateway.namespace
    }
    spec = {
      parentRefs = [
        {
          group       = "gateway.networking.k8s.io"
          kind        = "Gateway"
          name        = kubernetes_manifest.kserve_gateway[0].manifest.metadata.name
          sectionName = "http"
        }
      ]
      rules = [
        {
          matches = [
            {
              path = {
                type  = "PathPrefix"
                value = "/"
              }
            }
          ]
          filters = [
            {
              type = "RequestRedirect"
              requestRedirect = {
                scheme     = "https"
                statusCode = 301
              }
            }
          ]
        }
      ]
    }
  }
}
