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

variable "cert_manager_version" {
  type        = string
  description = "cert-manager chart version (KServe's tested version)."
  default     = "v1.17.0"

  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+$", var.cert_manager_version))
    error_message = "cert_manager_version must be an exact version such as v1.17.0."
  }
}

variable "istio_version" {
  type        = string
  description = "Version of the istio base, istiod and gateway charts (the networking layer)."
  default     = "1.27.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.istio_version))
    error_message = "istio_version must be an exact version such as 1.27.1."
  }
}

variable "knative_operator_version" {
  type        = string
  description = "Knative Operator chart version."
  default     = "v1.21.1"

  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+$", var.knative_operator_version))
    error_message = "knative_operator_version must be an exact version such as v1.21.1."
  }
}

variable "kserve_version" {
  type        = string
  description = "Version of the kserve-crd chart; keep it equal to kserve_version of stage 03-kserve."
  default     = "v0.20.0"

  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+$", var.kserve_version))
    error_message = "kserve_version must be an exact version such as v0.20.0."
  }
}

variable "internal_load_balancer" {
  type        = bool
  description = "Give the Istio ingress gateway an internal load balancer (an address in the VPC only) instead of an external one."
  default     = false
}
