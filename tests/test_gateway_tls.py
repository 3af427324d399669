"""The smoke test and the rollout analysis through an HTTPS gateway, as the delivery workflow
meets it: an address (the ingress IP), a route picked by the TLS server name and the Host
header, and a certificate from the gateway's own CA.

The gateway here is a real TLS server on 127.0.0.1 that, like Istio's, refuses a handshake
for a name it has no certificate for and forwards to a real `python -m predictor`.
"""

from __future__ import annotations

import datetime
import http.server
import ssl
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from predictor.rollout.analysis import Target, discover_model_name
from tests.serving import REPO_ROOT, PredictorProcess

HOST = "latest-demo-predictor.models.example.com"
SMOKE = REPO_ROOT / ".github" / "scripts" / "smoke_test.py"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_certificate(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A self-signed CA (as stage 03 makes by default) and a certificate for host from it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test gateway CA"))
        .issuer_name(_name("test gateway CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.crt",
        directory / "tls.crt",
        directory / "tls.key",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class Gateway:
    """TLS for one host name (SNI), routing by Host to a backend; records what it saw."""

    def __init__(self, cert: Path, key: Path, host: str, backend: str) -> None:
        self.server_names: list[str | None] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        def pick_route(sock, server_name, _context):
            self.server_names.append(server_name)
            if server_name != host:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            return None

        context.sni_callback = pick_route

        class Route(http.server.BaseHTTPRequestHandler):
            def forward(self) -> None:
                if self.headers.get("Host") != host:
                    self.send_error(404, "no route for this Host")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = urllib.request.Request(
                    backend + self.path,
                    data=body or None,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                    method=self.command,
                )
                with urllib.request.urlopen(request, timeout=10) as answer:
                    payload = answer.read()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.headers["Content-Type"])
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            do_GET = do_POST = forward

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Route)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    ca, cert, key = make_ca_and_certificate(tmp_path_factory.mktemp("tls"), HOST)
    with PredictorProcess(model_name="demo") as predictor:
        gateway = Gateway(cert, key, HOST, predictor.http_url)
        try:
            yield gateway, ca
        finally:
            gateway.close()


def smoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SMOKE), "--model=demo", "--expect=2,4", "--attempts=1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_smoke_test_passes_through_the_https_gateway_by_server_name(gateway):
    gw, ca = gateway
    before = len(gw.server_names)
    result = smoke(f"--ingress={gw.url}", f"--host={HOST}", f"--ca-cert={ca}")
    assert result.returncode == 0, result.stderr
    assert "v1: ok [2.0, 4.0]" in result.stdout and "v2: ok [2.0, 4.0]" in result.stdout
    # The server name was the route's host, never the address.
    assert set(gw.server_names[before:]) == {HOST}


def test_smoke_test_fails_without_the_gateways_ca(gateway):
    gw, _ = gateway
    result = smoke(f"--ingress={gw.url}", f"--host={HOST}")
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_smoke_test_fails_for_a_host_the_gateway_has_no_route_for(gateway):
    gw, ca = gateway
    result = smoke(f"--ingress={gw.url}", "--host=prev-demo.models.example.com", f"--ca-cert={ca}")
    assert result.returncode == 1
    assert "FAILED" in result.stderr


def test_rollout_analysis_targets_reach_the_tag_host_through_the_gateway(gateway):
    gw, ca = gateway
    target = Target.for_tag("latest", f"https://{HOST}", gw.url, str(ca))
    assert discover_model_name(target) == "demo"
    untrusted = Target.for_tag("latest", f"https://{HOST}", gw.url)
    assert discover_model_name(untrusted) is None
