variable "project_id" {
  type        = string
  description = "The GCP project of the cluster (as in stage 01-cluster)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid GCP project ID."
  }
}

variable "region" {
  type        = string
  description = "Region of the cluster (as in stage 01-cluster)."
  default     = "europe-west4"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region such as europe-west4."
  }
}

variable "cluster_name" {
  type        = string
  description = "Name of the GKE cluster (as in stage 01-cluster)."
  default     = "torch-predictor"

  validation {
    condition     = can(regex("^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be 1-40 lowercase letters, digits or hyphens."
  }
}

variable "knative_serving_version" {
  type        = string
  description = "Knative Serving version the operator installs."
  default     = "1.21.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.knative_serving_version))
    error_message = "knative_serving_version must be an exact version such as 1.21.1."
  }
}

variable "kserve_version" {
  type        = string
  description = "Version of the kserve-resources chart; keep it equal to kserve_version of stage 02."
  default     = "v0.20.0"

  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+$", var.kserve_version))
    error_message = "kserve_version must be an exact version such as v0.20.0."
  }
}

variable "domain" {
  type        = string
  description = "Domain of the InferenceService URLs (requests carry it in the Host header): Knative's domain in Knative mode, KServe's ingress domain and the Gateway's wildcard certificate in Standard mode."
  default     = "example.com"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.domain))
    error_message = "domain must be a DNS name."
  }
}

variable "predictor_namespace" {
  type        = string
  description = "Namespace of the InferenceService (as in stage 01-cluster)."
  default     = "models"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.predictor_namespace))
    error_message = "predictor_namespace must be a DNS-1123 label."
  }
}

variable "cluster_issuer" {
  type        = string
  description = "cert-manager ClusterIssuer that signs the gateway's HTTPS certificates (e.g. an ACME issuer for a real domain). Empty: a private CA created in this stage."
  default     = ""

  validation {
    condition     = can(regex("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", var.cluster_issuer))
    error_message = "cluster_issuer must be empty or the name of a ClusterIssuer."
  }
}

variable "kserve_deployment_mode" {
  type        = string
  description = "KServe's deployment mode: Knative (Knative Serving revisions, tag URLs, scale to zero) or Standard (Deployments and Services, traffic through a Gateway API Gateway; needs gateway_api_channel = \"CHANNEL_STANDARD\" in stage 01-cluster)."
  default     = "Knative"

  validation {
    condition     = contains(["Knative", "Standard"], var.kserve_deployment_mode)
    error_message = "kserve_deployment_mode must be Knative or Standard."
  }
}
