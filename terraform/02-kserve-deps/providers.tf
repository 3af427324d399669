provider "google" {
  project = var.project_id
  region  = var.region
}

# The cluster comes from stage 01-cluster; helm and kubectl reach it through its
# IAM-authenticated DNS endpoint with the caller's Google token.
data "google_client_config" "current" {}

data "google_container_cluster" "primary" {
  name     = var.cluster_name
  location = var.region
  project  = var.project_id
}

locals {
  cluster_host = "https://${data.google_container_cluster.primary.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint}"
}

provider "kubernetes" {
  host  = local.cluster_host
  token = data.google_client_config.current.access_token
}

provider "helm" {
  kubernetes {
    host  = local.cluster_host
    token = data.google_client_config.current.access_token
  }
}
