"""deploy/nginx.conf, as shipped, in front of our app: it parses, it proxies, its access log has no query
strings, and it buffers a slow client's request so our app never waits on it.

Needs nginx on the PATH (``apt-get install nginx``); skipped, with that reason, where it is not.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx) to check deploy/nginx.conf")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            # Valid for the address the tests call, so they verify it (verify=<this file>) as a client would.
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def nginx(tmp_path, stack):
    """The shipped server block, with only paths and ports changed, in front of ``stack``'s app."""
    cert, key = _self_signed(tmp_path)
    https, http = _free_port(), _free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in (("server 127.0.0.1:5001;", f"server 127.0.0.1:{stack.app_server.port};"),
                     ("listen 443 ", f"listen 127.0.0.1:{https} "), ("listen 80;", f"listen 127.0.0.1:{http};"),
                     ("/etc/ssl/certs/crm.example.com.pem", str(cert)),
                     ("/etc/ssl/private/crm.example.com.key", str(key)),
                     ("/var/log/nginx/", f"{tmp_path}/")):
        assert old in site, f"deploy/nginx.conf no longer has {old!r}: update this test"
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  access_log off;\n  include {tmp_path}/site.conf;\n}}\n")
    args = [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while socket.socket().connect_ex(("127.0.0.1", https)) != 0:
        assert time.monotonic() < deadline and proc.poll() is None, "nginx did not start"
        time.sleep(0.1)
    yield f"https://127.0.0.1:{https}", https, tmp_path
    proc.terminate()
    proc.wait(timeout=15)


def test_the_sample_proxies_and_logs_no_query_string(nginx, stack):
    base, _, folder = nginx
    trust = str(folder / "cert.pem")
    r = requests.post(f"{base}/api/bitrix/clients/1/contacts?api_key=leak-me-0123", verify=trust, timeout=10,
                      json={"fields": {"NAME": "Via", "LAST_NAME": "Nginx"}})
    assert r.status_code == 201, r.text
    got = requests.get(f"{base}/api/bitrix/clients/1/contacts/{r.json()['result']}", verify=trust, timeout=10)
    assert got.status_code == 200 and got.json()["result"]["NAME"] == "Via"
    assert got.headers["X-Request-ID"]  # nginx's $request_id, carried into our log lines
    mine = requests.get(f"{base}/api/bitrix/health", headers={"X-Request-ID": "trace-4711-abc"}, verify=trust,
                        timeout=10)
    assert mine.headers["X-Request-ID"] == "trace-4711-abc"  # the caller's own id goes through
    time.sleep(0.2)
    log = (folder / "bitrix24.access.log").read_text()
    assert "/api/bitrix/clients/1/contacts" in log and "leak-me" not in log and "api_key" not in log


def test_a_slow_client_is_nginx_s_to_wait_for(nginx, stack):
    base, port, folder = nginx
    seen, inner = [], stack.app.wsgi_app

    def noting(environ, start_response):
        if environ["PATH_INFO"] != "/api/bitrix/webhook":  # the emulator's events come direct
            seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    stack.app.wsgi_app = noting
    body = b'{"fields": {"NAME": "Slow"}}'
    trust = str(folder / "cert.pem")
    context = ssl.create_default_context(cafile=trust)
    slow = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1")
    slow.sendall(b"POST /api/bitrix/clients/1/contacts HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
    time.sleep(0.5)
    # Meanwhile others are served, and the app has not seen the slow request at all.
    assert requests.get(f"{base}/api/bitrix/health", verify=trust, timeout=10).status_code == 200
    assert seen == ["/api/bitrix/health"]
    slow.sendall(body[5:])
    answer = slow.recv(65536)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    assert seen == ["/api/bitrix/health", "/api/bitrix/clients/1/contacts"]
