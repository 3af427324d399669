# Workload Identity Federation for GitHub Actions: workflows exchange their OIDC token for
# short-lived credentials of the service accounts below. No service-account keys exist.

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = "github"
  display_name              = "GitHub Actions"

  depends_on = [google_project_service.apis]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  # checkov:skip=CKV_GCP_125: The condition below pins assertion.repository and assertion.sub (main, pull_request, environments) to var.github_repository, which checkov cannot resolve; tests/test_terraform.py asserts it.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-oidc"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
    "attribute.actor"      = "assertion.actor"
  }

  # Tokens of any other repository, and of any branch other than main outside an
  # environment or a pull request, are rejected before any IAM binding is consulted.
  attribute_condition = <<-EOT
    assertion.repository == '${var.github_repository}' && (
      assertion.sub == 'repo:${var.github_repository}:ref:refs/heads/main' ||
      assertion.sub == 'repo:${var.github_repository}:pull_request' ||
      assertion.sub.startsWith('repo:${var.github_repository}:environment:')
    )
  EOT

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

locals {
  # OIDC subjects of the jobs that authenticate (see .github/workflows).
  github_subjects = {
    main         = "repo:${var.github_repository}:ref:refs/heads/main"
    pull_request = "repo:${var.github_repository}:pull_request"
    production   = "repo:${var.github_repository}:environment:production"
    terraform    = "repo:${var.github_repository}:environment:terraform"
  }

  # What Terraform itself manages in this project (used by the terraform workflow).
  terraform_roles = [
    "roles/artifactregistry.admin",
    "roles/compute.networkAdmin",
    "roles/container.admin",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.workloadIdentityPoolAdmin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/serviceusage.serviceUsageAdmin",
    "roles/storage.admin",
  ]
}

# --- deployer: pushes images and rolls out the InferenceService.
resource "google_service_account" "deployer" {
  account_id   = "github-deployer"
  project      = var.project_id
  display_name = "GitHub Actions deployer"
}

# Delivery jobs on main (build, canary, rollback) and the production-gated promotion.
resource "google_service_account_iam_member" "deployer_wif" {
  for_each = toset([local.github_subjects.main, local.github_subjects.production])

  service_account_id = google_service_account.deployer.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${each.value}"
}

resource "google_artifact_registry_repository_iam_member" "deployer_push" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer.member
}

# Kubernetes API access for helm/kubectl (namespaced objects, including InferenceServices).
resource "google_project_iam_member" "deployer_gke" {
  project = var.project_id
  role    = "roles/container.developer"
  member  = google_service_account.deployer.member
}

# --- terraform: plans and applies this configuration from the terraform workflow.
resource "google_service_account" "terraform" {
  account_id   = "github-terraform"
  project      = var.project_id
  display_name = "GitHub Actions terraform"
}

# Plans on pull requests of this repository (forks get no OIDC token) and applies in the
# "terraform" environment, which requires a reviewer.
resource "google_service_account_iam_member" "terraform_wif" {
  for_each = toset([local.github_subjects.pull_request, local.github_subjects.terraform])

  service_account_id = google_service_account.terraform.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${each.value}"
}

resource "google_project_iam_member" "terraform" {
  # checkov:skip=CKV_GCP_49: Terraform creates the node, predictor and deployer service accounts and their Workload Identity bindings, which needs serviceAccountAdmin.
  for_each = toset(local.terraform_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.terraform.member
}
