# Google APIs at one fixed address range. Inside the VPC, *.googleapis.com resolves to the
# private.googleapis.com VIP (199.36.153.8/30), reached through Private Google Access (the
# subnet has private_ip_google_access; the VPC's default route covers the range), so the
# predictor's NetworkPolicy can allow Google APIs by IP and nothing else on the internet.
# Pods resolve through kube-dns, which asks the metadata server, which answers from Cloud DNS.

resource "google_dns_managed_zone" "googleapis" {
  name        = "${var.cluster_name}-googleapis"
  project     = var.project_id
  dns_name    = "googleapis.com."
  description = "Private Google Access: *.googleapis.com at the private.googleapis.com VIP."
  visibility  = "private"
  labels      = var.labels

  private_visibility_config {
    networks {
      network_url = google_compute_network.vpc.id
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_dns_record_set" "private_googleapis" {
  name         = "private.googleapis.com."
  project      = var.project_id
  managed_zone = google_dns_managed_zone.googleapis.name
  type         = "A"
  ttl          = 300
  rrdatas      = ["199.36.153.8", "199.36.153.9", "199.36.153.10", "199.36.153.11"]
}

resource "google_dns_record_set" "googleapis_wildcard" {
  name         = "*.googleapis.com."
  project      = var.project_id
  managed_zone = google_dns_managed_zone.googleapis.name
  type         = "CNAME"
  ttl          = 300
  rrdatas      = [google_dns_record_set.private_googleapis.name]
}
