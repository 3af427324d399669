output "ingress_ip" {
  description = "External IP of the Istio ingress gateway (requests to InferenceServices go here)."
  value       = try(data.kubernetes_service_v1.ingress.status[0].load_balancer[0].ingress[0].ip, "")
}

output "kserve_version" {
  description = "Installed KServe version."
  value       = helm_release.kserve.version
}
