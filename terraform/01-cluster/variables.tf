variable "project_id" {
  type        = string
  description = "The GCP project that hosts the cluster, the registry and the model bucket."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid GCP project ID (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  type        = string
  description = "Region of the regional cluster, the Artifact Registry repository and the bucket."
  default     = "europe-west4"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region such as europe-west4 (not a zone)."
  }
}

variable "cluster_name" {
  type        = string
  description = "Name of the GKE cluster."
  default     = "torch-predictor"

  validation {
    condition     = can(regex("^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be 1-40 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "release_channel" {
  type        = string
  description = "GKE release channel; the cluster and node versions follow it."
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "gateway_api_channel" {
  type        = string
  description = "GKE's Gateway API (the gateway.networking.k8s.io CRDs, and GKE's own GatewayClasses): CHANNEL_STANDARD for KServe's Standard mode (kserve_deployment_mode in stage 03-kserve), CHANNEL_DISABLED to turn it off, empty to leave the cluster as it is."
  default     = ""

  validation {
    condition     = contains(["", "CHANNEL_STANDARD", "CHANNEL_DISABLED"], var.gateway_api_channel)
    error_message = "gateway_api_channel must be empty, CHANNEL_STANDARD or CHANNEL_DISABLED."
  }
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the node subnet."
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR block."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for pods (VPC-native cluster)."
  default     = "10.20.0.0/14"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a CIDR block."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for services."
  default     = "10.24.0.0/20"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a CIDR block."
  }
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "A /28 range for the private control plane endpoint."
  default     = "172.16.0.0/28"

  validation {
    condition     = can(cidrhost(var.master_ipv4_cidr_block, 0)) && endswith(var.master_ipv4_cidr_block, "/28")
    error_message = "master_ipv4_cidr_block must be a /28 CIDR block."
  }
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = <<-EOT
    Networks allowed to reach the control plane's IP endpoint. GitHub Actions and
    operators use the IAM-authenticated DNS endpoint instead, so this may stay empty.
  EOT
  default     = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0))])
    error_message = "Every master_authorized_networks entry needs a valid cidr_block."
  }
}

variable "cpu_pool" {
  type = object({
    machine_type   = optional(string, "e2-standard-4")
    min_node_count = optional(number, 1)
    max_node_count = optional(number, 5)
    disk_size_gb   = optional(number, 100)
  })
  description = "The autoscaling CPU node pool (per zone counts)."
  default     = {}

  validation {
    condition = (
      var.cpu_pool.min_node_count >= 0 &&
      var.cpu_pool.max_node_count >= var.cpu_pool.min_node_count &&
      var.cpu_pool.max_node_count <= 100
    )
    error_message = "cpu_pool needs 0 <= min_node_count <= max_node_count <= 100."
  }
}

variable "gpu_pool" {
  type = object({
    enabled           = optional(bool, false)
    machine_type      = optional(string, "g2-standard-8")
    accelerator_type  = optional(string, "nvidia-l4")
    accelerator_count = optional(number, 1)
    max_node_count    = optional(number, 2)
    disk_size_gb      = optional(number, 200)
    spot              = optional(bool, false)
  })
  description = "An optional GPU node pool that scales from zero; GKE installs the driver."
  default     = {}

  validation {
    condition     = var.gpu_pool.accelerator_count >= 1 && var.gpu_pool.max_node_count >= 1
    error_message = "gpu_pool needs accelerator_count >= 1 and max_node_count >= 1."
  }
}

variable "github_repository" {
  type        = string
  description = "The GitHub repository (owner/name) whose workflows may impersonate the GitHub service accounts."

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must look like owner/name."
  }
}

variable "github_repository_id" {
  type        = string
  description = "Numeric id of the GitHub repository (`gh api repos/OWNER/NAME --jq .id`); the WIF provider trusts tokens of this id only."

  validation {
    condition     = can(regex("^[0-9]+$", var.github_repository_id))
    error_message = "github_repository_id must be the repository's numeric id."
  }
}

variable "github_repository_owner_id" {
  type        = string
  description = "Numeric id of the repository's owner (`gh api repos/OWNER/NAME --jq .owner.id`)."

  validation {
    condition     = can(regex("^[0-9]+$", var.github_repository_owner_id))
    error_message = "github_repository_owner_id must be the owner's numeric id."
  }
}

variable "github_subject_format" {
  type        = string
  description = "Form of the repository's OIDC subject claim: immutable (repo:owner@id/name@id:..., the default for repositories created since 2026-07-15) or legacy (repo:owner/name:...). `gh api repos/OWNER/NAME/actions/oidc/customization/sub` tells."
  default     = "immutable"

  validation {
    condition     = contains(["immutable", "legacy"], var.github_subject_format)
    error_message = "github_subject_format must be immutable or legacy."
  }
}

variable "terraform_state_bucket" {
  type        = string
  description = "Name of the bucket holding the Terraform state (created by hand, see docs/infrastructure.md); the plan account may read it."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.terraform_state_bucket))
    error_message = "terraform_state_bucket must be a GCS bucket name."
  }
}

variable "binary_authorization_enforcement" {
  type        = string
  description = "What the Binary Authorization policy does with an image that lacks the attestation: ENFORCED_BLOCK_AND_AUDIT_LOG, or DRYRUN_AUDIT_LOG_ONLY to find missing allow-list patterns first."
  default     = "ENFORCED_BLOCK_AND_AUDIT_LOG"

  validation {
    condition     = contains(["ENFORCED_BLOCK_AND_AUDIT_LOG", "DRYRUN_AUDIT_LOG_ONLY"], var.binary_authorization_enforcement)
    error_message = "binary_authorization_enforcement must be ENFORCED_BLOCK_AND_AUDIT_LOG or DRYRUN_AUDIT_LOG_ONLY."
  }
}

variable "platform_image_patterns" {
  type        = list(string)
  description = "Images admitted without the attestation: the serving platform that stages 02 and 03 install (cert-manager, Istio, Knative, KServe) and the chart's test image. Google's own GKE images are admitted by the policy's global evaluation mode."
  default = [
    "quay.io/jetstack/**",
    "docker.io/istio/**",
    "gcr.io/knative-releases/**",
    "docker.io/kserve/**",
    "quay.io/brancz/kube-rbac-proxy*",
    "docker.io/curlimages/curl*",
  ]

  validation {
    condition     = alltrue([for p in var.platform_image_patterns : can(regex("^[a-z0-9.-]+\\.[a-z]+/[^*]+\\*{0,2}$", p))])
    error_message = "Each pattern must name a registry host and a path, with at most a trailing * or **."
  }
}

variable "model_bucket_name" {
  type        = string
  description = "Name of the GCS bucket for models; empty means <project_id>-models."
  default     = ""

  validation {
    condition     = var.model_bucket_name == "" || can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.model_bucket_name))
    error_message = "model_bucket_name must be a valid bucket name."
  }
}

variable "registry_repository_id" {
  type        = string
  description = "Artifact Registry Docker repository for the predictor image."
  default     = "torch-predictor"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.registry_repository_id))
    error_message = "registry_repository_id must be lowercase letters, digits and hyphens."
  }
}

variable "predictor_namespace" {
  type        = string
  description = "Kubernetes namespace of the InferenceService."
  default     = "models"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.predictor_namespace))
    error_message = "predictor_namespace must be a DNS-1123 label."
  }
}

variable "predictor_service_account" {
  type        = string
  description = "Kubernetes service account of the predictor (the chart's serviceAccount name)."
  default     = "torch-predictor"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.predictor_service_account))
    error_message = "predictor_service_account must be a DNS-1123 subdomain."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the cluster and the model bucket from terraform destroy."
  default     = true
}

variable "labels" {
  type        = map(string)
  description = "Labels put on every resource that takes them."
  default = {
    app        = "torch-predictor"
    managed-by = "terraform"
  }

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys and values must be lowercase letters, digits, _ or - (keys start with a letter)."
  }
}
