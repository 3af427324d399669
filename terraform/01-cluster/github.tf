# Workload Identity Federation for GitHub Actions: each job that touches the cloud exchanges
# its OIDC token for short-lived credentials of exactly one service account below, chosen by
# the job's OIDC subject. No service-account keys exist. docs/infrastructure.md explains why
# each account may do what it may.

locals {
  github_owner = split("/", var.github_repository)[0]
  github_name  = split("/", var.github_repository)[1]

  # GitHub's OIDC subject starts with the repository: "repo:owner/name" (legacy) or, for
  # repositories created since 2026-07-15 or opted in, "repo:owner@OWNER_ID/name@REPO_ID".
  github_subject_prefix = (var.github_subject_format == "immutable"
    ? "repo:${local.github_owner}@${var.github_repository_owner_id}/${local.github_name}@${var.github_repository_id}"
    : "repo:${var.github_repository}"
  )

  # One account per job (see .github/workflows): who it serves, and the only OIDC subject
  # that may impersonate it. Environments are trusted on main only (attribute_condition).
  github_accounts = {
    "terraform-plan" = {
      purpose = "terraform plan of pull requests (read-only)"
      subject = "${local.github_subject_prefix}:pull_request"
    }
    "terraform" = {
      purpose = "terraform apply in the terraform environment"
      subject = "${local.github_subject_prefix}:environment:terraform"
    }
    "publisher" = {
      purpose = "build, scan, sign and push the image from main"
      subject = "${local.github_subject_prefix}:ref:refs/heads/main"
    }
    "canary" = {
      purpose = "canary, smoke test and rollback in the canary environment"
      subject = "${local.github_subject_prefix}:environment:canary"
    }
    "promoter" = {
      purpose = "promotion in the production environment"
      subject = "${local.github_subject_prefix}:environment:production"
    }
  }

  # Project-level roles of each account; resource-level grants are the resources below.
  github_project_roles = {
    "terraform-plan" = [
      "roles/iam.securityReviewer", # IAM policies of the project, accounts and buckets
      "roles/viewer",               # every other resource the configuration manages
    ]
    "terraform" = [
      "roles/artifactregistry.admin",
      "roles/binaryauthorization.attestorsAdmin",
      "roles/binaryauthorization.policyEditor",
      "roles/cloudkms.admin",
      "roles/compute.networkAdmin",
      "roles/container.admin",
      "roles/containeranalysis.notes.editor",
      "roles/dns.admin",
      "roles/iam.serviceAccountAdmin",
      "roles/iam.workloadIdentityPoolAdmin",
      "roles/resourcemanager.projectIamAdmin",
      "roles/serviceusage.serviceUsageAdmin",
      "roles/storage.admin",
    ]
    # Attestation occurrences have no resource-level IAM.
    "publisher" = ["roles/containeranalysis.occurrences.editor"]
    # Credentials for the cluster only; what they may do inside it is Kubernetes RBAC,
    # namespaced, in terraform/03-kserve/deployer_rbac.tf. The canary job also reads the
    # predictors' series through Google Managed Prometheus' query API (monitoring.googleapis.com
    # .../location/global/prometheus/api/v1/query: monitoring.timeSeries.list) to judge a
    # canary on real traffic; monitoring.viewer reads metrics and writes nothing.
    "canary"   = ["roles/container.clusterViewer", "roles/monitoring.viewer"]
    "promoter" = ["roles/container.clusterViewer"]
  }

  github_project_grants = merge([
    for account, roles in local.github_project_roles : {
      for role in roles : "${account} ${role}" => { account = account, role = role }
    }
  ]...)
}

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = "github"
  display_name              = "GitHub Actions"

  depends_on = [google_project_service.apis]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  # checkov:skip=CKV_GCP_125: The condition pins assertion.repository_id and repository_owner_id to variables, which checkov cannot resolve; tests/test_terraform.py asserts it.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-oidc"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"                = "assertion.sub"
    "attribute.repository"          = "assertion.repository"
    "attribute.repository_id"       = "assertion.repository_id"
    "attribute.repository_owner_id" = "assertion.repository_owner_id"
    "attribute.ref"                 = "assertion.ref"
    "attribute.actor"               = "assertion.actor"
  }

  # Only this repository, by its numeric ids (names can be re-registered by others). Pull
  # requests get the read-only plan account; everything else, environments included, only
  # when it runs from main, so a branch or pull request asking for an environment gets nothing.
  attribute_condition = <<-EOT
    assertion.repository_id == '${var.github_repository_id}' &&
    assertion.repository_owner_id == '${var.github_repository_owner_id}' && (
      assertion.sub == '${local.github_subject_prefix}:pull_request' || (
        assertion.ref == 'refs/heads/main' && (
          assertion.sub == '${local.github_subject_prefix}:ref:refs/heads/main' ||
          assertion.sub.startsWith('${local.github_subject_prefix}:environment:')
        )
      )
    )
  EOT

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "github" {
  for_each = local.github_accounts

  account_id   = "github-${each.key}"
  project      = var.project_id
  display_name = "GitHub Actions: ${each.value.purpose}"
}

# The apply account keeps its identity across the split into one account per job.
moved {
  from = google_service_account.terraform
  to   = google_service_account.github["terraform"]
}

resource "google_service_account_iam_member" "github_wif" {
  for_each = local.github_accounts

  service_account_id = google_service_account.github[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${each.value.subject}"
}

resource "google_project_iam_member" "github" {
  # checkov:skip=CKV_GCP_49: The terraform account creates the node, predictor and GitHub service accounts and their bindings, which needs serviceAccountAdmin; only the reviewed terraform environment on main can use it.
  for_each = local.github_project_grants

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.github[each.value.account].member
}

# The apply account's roles move with it, so that no apply revokes them half-way.
moved {
  from = google_project_iam_member.terraform["roles/artifactregistry.admin"]
  to   = google_project_iam_member.github["terraform roles/artifactregistry.admin"]
}

moved {
  from = google_project_iam_member.terraform["roles/compute.networkAdmin"]
  to   = google_project_iam_member.github["terraform roles/compute.networkAdmin"]
}

moved {
  from = google_project_iam_member.terraform["roles/container.admin"]
  to   = google_project_iam_member.github["terraform roles/container.admin"]
}

moved {
  from = google_project_iam_member.terraform["roles/iam.serviceAccountAdmin"]
  to   = google_project_iam_member.github["terraform roles/iam.serviceAccountAdmin"]
}

moved {
  from = google_project_iam_member.terraform["roles/iam.workloadIdentityPoolAdmin"]
  to   = google_project_iam_member.github["terraform roles/iam.workloadIdentityPoolAdmin"]
}

moved {
  from = google_project_iam_member.terraform["roles/resourcemanager.projectIamAdmin"]
  to   = google_project_iam_member.github["terraform roles/resourcemanager.projectIamAdmin"]
}

moved {
  from = google_project_iam_member.terraform["roles/serviceusage.serviceUsageAdmin"]
  to   = google_project_iam_member.github["terraform roles/serviceusage.serviceUsageAdmin"]
}

moved {
  from = google_project_iam_member.terraform["roles/storage.admin"]
  to   = google_project_iam_member.github["terraform roles/storage.admin"]
}

# --- terraform-plan: reads the state without taking the lock (plans run with -lock=false).
resource "google_storage_bucket_iam_member" "terraform_plan_reads_state" {
  bucket = var.terraform_state_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.github["terraform-plan"].member
}

# --- terraform: node pools run as the node account, which needs actAs on it.
resource "google_service_account_iam_member" "terraform_uses_node_account" {
  service_account_id = google_service_account.nodes.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.github["terraform"].member
}

# --- publisher: pushes images and creates the Binary Authorization attestation.
resource "google_artifact_registry_repository_iam_member" "publisher_pushes" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.github["publisher"].member
}
