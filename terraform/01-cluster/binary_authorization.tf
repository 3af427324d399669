# Binary Authorization: the cluster runs only images that the delivery workflow built, scanned
# and attested (a signature by the KMS key below, recorded under the attestor's note), plus
# the serving platform's upstream images (var.platform_image_patterns) and Google's own.

resource "google_kms_key_ring" "attestor" {
  name     = "${var.cluster_name}-binauthz"
  project  = var.project_id
  location = var.region

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "attestor" {
  # checkov:skip=CKV_GCP_43: Asymmetric signing keys cannot rotate automatically; a new key version is added to the attestor by hand (docs/infrastructure.md).
  name     = "image-attestor"
  key_ring = google_kms_key_ring.attestor.id
  purpose  = "ASYMMETRIC_SIGN"
  labels   = var.labels

  version_template {
    algorithm        = "EC_SIGN_P256_SHA256"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    prevent_destroy = true
  }
}

data "google_kms_crypto_key_version" "attestor" {
  crypto_key = google_kms_crypto_key.attestor.id

  depends_on = [google_kms_crypto_key_iam_member.terraform_reads_public_key]
}

resource "google_container_analysis_note" "built_by_ci" {
  name    = "${var.cluster_name}-built-by-ci"
  project = var.project_id

  attestation_authority {
    hint {
      human_readable_name = "Built, scanned and signed by the deliver workflow"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_binary_authorization_attestor" "built_by_ci" {
  name    = "${var.cluster_name}-built-by-ci"
  project = var.project_id

  attestation_authority_note {
    note_reference = google_container_analysis_note.built_by_ci.name

    public_keys {
      id = data.google_kms_crypto_key_version.attestor.id
      pkix_public_key {
        public_key_pem      = data.google_kms_crypto_key_version.attestor.public_key[0].pem
        signature_algorithm = data.google_kms_crypto_key_version.attestor.public_key[0].algorithm
      }
    }
  }
}

resource "google_binary_authorization_policy" "policy" {
  project = var.project_id

  # Google-maintained system images (GKE add-ons, kube-system).
  global_policy_evaluation_mode = "ENABLE"

  dynamic "admission_whitelist_patterns" {
    for_each = var.platform_image_patterns
    content {
      name_pattern = admission_whitelist_patterns.value
    }
  }

  default_admission_rule {
    evaluation_mode         = "REQUIRE_ATTESTATION"
    enforcement_mode        = var.binary_authorization_enforcement
    require_attestations_by = [google_binary_authorization_attestor.built_by_ci.name]
  }
}

# --- who may use the key, the note and the attestor.
resource "google_kms_crypto_key_iam_member" "terraform_reads_public_key" {
  crypto_key_id = google_kms_crypto_key.attestor.id
  role          = "roles/cloudkms.publicKeyViewer"
  member        = google_service_account.github["terraform"].member
}

resource "google_kms_crypto_key_iam_member" "publisher_signs" {
  crypto_key_id = google_kms_crypto_key.attestor.id
  role          = "roles/cloudkms.signerVerifier"
  member        = google_service_account.github["publisher"].member
}

resource "google_container_analysis_note_iam_member" "publisher_attaches" {
  project = var.project_id
  note    = google_container_analysis_note.built_by_ci.name
  role    = "roles/containeranalysis.notes.attacher"
  member  = google_service_account.github["publisher"].member
}

resource "google_binary_authorization_attestor_iam_member" "publisher_reads_attestor" {
  project  = var.project_id
  attestor = google_binary_authorization_attestor.built_by_ci.name
  role     = "roles/binaryauthorization.attestorsViewer"
  member   = google_service_account.github["publisher"].member
}

# The plan reads the attestor's public key too (data source above).
resource "google_kms_crypto_key_iam_member" "terraform_plan_reads_public_key" {
  crypto_key_id = google_kms_crypto_key.attestor.id
  role          = "roles/cloudkms.publicKeyViewer"
  member        = google_service_account.github["terraform-plan"].member
}
