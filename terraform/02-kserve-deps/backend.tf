# State lives in a GCS bucket created once by hand (see docs/infrastructure.md).
# The bucket and prefix are passed at init time:
#   terraform init -backend-config=backend.hcl
# with backend.hcl written from backend.hcl.example.
terraform {
  backend "gcs" {}
}
