output "ingress_ip" {
  description = "IP of the Istio ingress gateway (HTTPS requests to InferenceServices go here; internal with internal_load_balancer in stage 02)."
  value       = try(data.kubernetes_service_v1.ingress.status[0].load_balancer[0].ingress[0].ip, "")
}

output "kserve_version" {
  description = "Installed KServe version."
  value       = helm_release.kserve.version
}

output "gateway_ca_secret" {
  description = "namespace/name of the Secret whose ca.crt clients must trust (the private CA); empty with var.cluster_issuer."
  value       = local.self_signed_ca ? "cert-manager/${kubernetes_manifest.gateway_ca[0].manifest.spec.secretName}" : ""
}
