output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.primary.name
}

output "cluster_location" {
  description = "Region of the GKE cluster."
  value       = google_container_cluster.primary.location
}

output "cluster_dns_endpoint" {
  description = "IAM-authenticated DNS endpoint of the control plane."
  value       = google_container_cluster.primary.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint
}

output "image_repository" {
  description = "Image repository for the predictor (GitHub variable IMAGE_REPOSITORY)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/torch-predictor"
}

output "model_bucket" {
  description = "GCS bucket for models; use gs://<bucket>/<model> as the storage URI."
  value       = google_storage_bucket.models.name
}

output "predictor_gsa_email" {
  description = "Google service account for the chart's serviceAccount.annotations (iam.gke.io/gcp-service-account)."
  value       = google_service_account.predictor.email
}

output "workload_identity_provider" {
  description = "Full provider name for google-github-actions/auth (GitHub variable WIF_PROVIDER)."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "github_service_accounts" {
  description = "Service account of each GitHub job (GitHub variables TERRAFORM_PLAN_SA, TERRAFORM_SA, PUBLISHER_SA, CANARY_SA, PROMOTER_SA)."
  value       = { for name, account in google_service_account.github : name => account.email }
}

output "binauthz_attestor" {
  description = "Attestor of the images the deliver workflow attests (GitHub variable BINAUTHZ_ATTESTOR)."
  value       = google_binary_authorization_attestor.built_by_ci.id
}

output "binauthz_key_version" {
  description = "KMS key version that signs the attestations (GitHub variable BINAUTHZ_KEY_VERSION)."
  value       = data.google_kms_crypto_key_version.attestor.id
}
