output "ingress_ip" {
  description = "IP of the Istio ingress gateway, in both modes: HTTPS requests to InferenceServices go here (Knative's routes, or in Standard mode the Gateway kserve_gateway); internal with internal_load_balancer in stage 02."
  value       = try(data.kubernetes_service_v1.ingress.status[0].load_balancer[0].ingress[0].ip, "")
}

output "kserve_version" {
  description = "Installed KServe version."
  value       = helm_release.kserve.version
}

output "kserve_deployment_mode" {
  description = "The mode KServe was installed in (KServe's default for new InferenceServices): Knative or Standard."
  value       = var.kserve_deployment_mode
}

output "kserve_gateway" {
  description = "namespace/name of the Gateway API Gateway that KServe's HTTPRoutes attach to (Standard mode); empty in Knative mode."
  value       = local.standard ? "${kubernetes_manifest.kserve_gateway[0].manifest.metadata.namespace}/${kubernetes_manifest.kserve_gateway[0].manifest.metadata.name}" : ""
}

output "inference_url_format" {
  description = "The URL an InferenceService <name> in <namespace> gets: Knative's route host in Knative mode, KServe's Gateway API host in Standard mode."
  value       = local.knative ? "https://<name>-predictor.<namespace>.${var.domain}" : "https://<name>-<namespace>.${var.domain}"
}

output "gateway_ca_secret" {
  description = "namespace/name of the Secret whose ca.crt clients must trust (the private CA); empty with var.cluster_issuer."
  value       = local.self_signed_ca ? "cert-manager/${kubernetes_manifest.gateway_ca[0].manifest.spec.secretName}" : ""
}
