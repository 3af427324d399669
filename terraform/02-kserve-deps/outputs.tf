output "releases" {
  description = "Installed charts and their versions."
  value = {
    for r in [
      helm_release.cert_manager,
      helm_release.istio_base,
      helm_release.istiod,
      helm_release.istio_ingressgateway,
      helm_release.knative_operator,
      helm_release.kserve_crd,
    ] : r.name => r.version
  }
}

output "ingress_load_balancer" {
  description = "Kind of load balancer in front of the Istio ingress gateway."
  value       = var.internal_load_balancer ? "internal" : "external"
}
