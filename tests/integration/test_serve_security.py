"""`deskcast serve`'s trust: HTTPS with a certificate and key, an optional listen token, the
metadata token, request limits, no path traversal, and one-line errors for bad TLS files."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deskcast.encode.mp3 import side_info_main_data_begin, split_frames
from rig.signals import dominant_frequency

from .conftest import Cli, finish, one_error_line, wait_for_line
from .test_serve import decode, free_tcp_port

LISTEN_TOKEN = "let-me-listen"
META_TOKEN = "security-test-metadata-token"


def make_cert(folder: Path, name: str = "cert") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key (openssl CLI)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def start(cli: Cli, port: int, *args: str) -> subprocess.Popen[bytes]:
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "--token", META_TOKEN, *args)
    wait_for_line(server, "serving")
    return server


def raw(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (no client-side path normalising) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body


def closed_after(sock: socket.socket, t0: float) -> float:
    """Seconds from ``t0`` until the server closed ``sock`` (which sends nothing)."""
    try:
        while sock.recv(4096):
            pass
    except (OSError, ssl.SSLError):
        pass
    return time.monotonic() - t0


def get(url: str, *, headers: dict[str, str] | None = None, method: str = "GET",
        context: ssl.SSLContext | None = None, limit: int = 4096
        ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read(limit)
    except urllib.error.HTTPError as err:
        with err:  # it holds the connection
            return err.code, dict(err.headers), err.read(limit)


def test_https_serves_the_certificate_a_decodable_stream_and_the_page(
        cli: Cli, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    port = free_tcp_port()
    server = cli.start("-v", "serve", "-s", "tone:1000", "--listen", f"127.0.0.1:{port}",
                       "--tls-cert", str(cert), "--tls-key", str(key), "-t", "60",
                       "--header-timeout-s", "3")
    assert f"on https://127.0.0.1:{port}/" in wait_for_line(server, "serving")
    base = f"https://127.0.0.1:{port}"
    client = ssl.create_default_context(cafile=str(cert))  # trusts exactly this certificate
    try:
        # A client that never says hello, and one that shakes hands but sends no request, are
        # both closed after --header-timeout-s.
        t0 = time.monotonic()
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        mute = client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                  server_hostname="127.0.0.1")
        with silent, mute:
            closed = [closed_after(s, t0) for s in (silent, mute)]
        assert all(2.5 <= c <= 6.0 for c in closed), closed
        # The served certificate is ours, and the protocol is TLS 1.2 or newer.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain, \
                client.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
            served = tls.getpeercert(binary_form=True)
            version = tls.version()
        ours = ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert served is not None and hashlib.sha256(served).digest() == \
            hashlib.sha256(ours).digest()
        assert version in ("TLSv1.2", "TLSv1.3")
        # A client that offers only TLS 1.1 (and would take any cipher) is refused; the same
        # client offering TLS 1.2 gets in.
        for version_flag, accepted in (("-tls1_1", False), ("-tls1_2", True)):
            hello = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                                    version_flag, "-cipher", "DEFAULT:@SECLEVEL=0"],
                                   check=False, input=b"", capture_output=True, timeout=30)
            assert (b"Cipher is " in hello.stdout and b"Cipher is (NONE)" not in hello.stdout
                    ) == accepted, (version_flag, hello.stdout[-500:])
        # Plain HTTP on the HTTPS port gets no page.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = plain.recv(1024)
            except ConnectionResetError:
                answer = b""
            assert b"<audio" not in answer and not answer.startswith(b"HTTP/1.1 200")

        code, _, page = get(f"{base}/", context=client, limit=1 << 16)
        assert code == 200 and b'src="app.js"' in page and b'href="app.css"' in page
        assert b"http://" not in page  # relative URLs only: the page works over https
        code, _, script = get(f"{base}/app.js", context=client, limit=1 << 16)
        assert code == 200 and b'"stream." + format.value' in script
        assert b'new EventSource("api/events' in script and b"http:" not in script

        start_t = time.monotonic()
        data = bytearray()
        with urllib.request.urlopen(f"{base}/stream.mp3", timeout=5, context=client) as resp:
            assert resp.headers["Content-Type"] == "audio/mpeg"
            while time.monotonic() - start_t < 3.0:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                data += chunk
    finally:
        server.terminate()  # SIGTERM: a clean stop
        code, err = finish(server, timeout=20)
    assert code == 0, err
    frames, _rest = split_frames(bytes(data))
    assert len(frames) * 1152 / 48000 >= 3.0  # burst + 3 s live
    assert all(side_info_main_data_begin(f) == 0 for f in frames)
    x = decode(b"".join(frames))
    assert dominant_frequency(x[2000:], 48000) == pytest.approx(1000.0, abs=2.0)


def test_bad_tls_files_are_one_line_errors_naming_the_file(cli: Cli, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    _other_cert, other_key = make_cert(tmp_path, "other")
    locked = tmp_path / "locked.pem"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:x",
                    "-out", str(locked)], check=True, capture_output=True, timeout=30)
    missing = tmp_path / "nope.pem"
    cases = [
        (["--tls-cert", str(missing), "--tls-key", str(key)], [str(missing), "does not exist"]),
        (["--tls-cert", str(cert)], ["--tls-cert needs --tls-key"]),
        (["--tls-key", str(key)], ["--tls-key needs --tls-cert"]),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)],
         [str(other_key), "does not belong to", str(cert)]),
        (["--tls-cert", str(key), "--tls-key", str(cert)], [str(key), "swap"]),
        (["--tls-cert", str(cert), "--tls-key", str(locked)], [str(locked), "passphrase"]),
        (["--tls-cert", str(tmp_path), "--tls-key", str(key)], [str(tmp_path), "folder"]),
        (["--listen-token", ""], ["--listen-token"]),
    ]
    for args, needles in cases:
        line = one_error_line(cli.run("serve", "-s", "tone:1000", "--listen", "127.0.0.1:1",
                                      *args, timeout=30))
        for needle in needles:
            assert needle in line, (args, line)


def test_listen_token_guards_listening_but_not_the_assets_or_the_metadata_preflight(
        cli: Cli) -> None:
    port = free_tcp_port()
    server = start(cli, port, "--listen-token", LISTEN_TOKEN, "-t", "60")
    base = f"http://127.0.0.1:{port}"
    basic = "Basic " + base64.b64encode(f"anyone:{LISTEN_TOKEN}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"anyone:let-me-listeN").decode()
    guarded = ["/", "/stream.mp3", "/stream.opus", "/api/status", "/api/events", "/metrics",
               "/nothing-here"]
    try:
        for path in guarded:
            for url, headers in [(f"{base}{path}", {}),
                                 (f"{base}{path}?token=let-me-listeN", {}),
                                 (f"{base}{path}?token=", {}),
                                 (f"{base}{path}", {"Authorization": wrong}),
                                 (f"{base}{path}", {"Authorization": "Basic !!!"}),
                                 (f"{base}{path}", {"Authorization": f"Bearer {LISTEN_TOKEN}"})]:
                code, hdrs, body = get(url, headers=headers)
                assert code == 401, (url, headers, code)
                assert hdrs["WWW-Authenticate"].startswith('Basic realm="deskcast"')
                assert b"token" in body
            code, _, _ = get(f"{base}{path}", method="HEAD")
            assert code == 401, path
        for path in guarded[:-1]:  # with the token, by query or basic auth (any user name)
            for url, headers in [(f"{base}{path}?token={LISTEN_TOKEN}", {}),
                                 (f"{base}{path}", {"Authorization": basic})]:
                code, _, body = get(url, headers=headers, limit=200)
                assert code == 200, (url, headers, code)
                assert body, url
        code, _, body = get(f"{base}/nothing-here?token={LISTEN_TOKEN}")
        assert code == 404
        code, _, status = get(f"{base}/api/status", headers={"Authorization": basic},
                              limit=1 << 16)
        assert json.loads(status)["source"] == "tone:1000"
        code, hdrs, _ = get(f"{base}/stream.mp3?token={LISTEN_TOKEN}", method="HEAD")
        assert code == 200 and hdrs["Content-Type"] == "audio/mpeg"
        for path in ("/app.js", "/app.css"):  # secret-free assets stay open
            code, _, _ = get(f"{base}{path}")
            assert code == 200, path
        # The page takes the token from its own URL to the stream and the events.
        code, _, script = get(f"{base}/app.js", limit=1 << 16)
        assert b'get("token")' in script and b"encodeURIComponent(token)" in script
        assert b'"stream." + format.value + "?" + auth' in script
        assert b'EventSource("api/events?" + auth)' in script

        # State changes need the metadata bearer token, not the listen token.
        meta = {"Content-Type": "application/json"}
        body_json = json.dumps({"title": "A - B"}).encode()
        for auth in (None, f"Bearer {LISTEN_TOKEN}", basic, f"Bearer {META_TOKEN}x"):
            req = urllib.request.Request(f"{base}/api/metadata", data=body_json, method="POST",
                                         headers=meta | ({"Authorization": auth} if auth
                                                         else {}))
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=5)
            assert refused.value.code == 401, auth
            refused.value.close()
        req = urllib.request.Request(f"{base}/api/metadata", data=body_json, method="POST",
                                     headers=meta | {"Authorization": f"Bearer {META_TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["now_playing"]["title"] == "B"
        # The CORS preflight of that POST needs no credentials (browsers send none with it).
        code, hdrs, _ = get(f"{base}/api/metadata", method="OPTIONS",
                            headers={"Origin": "http://elsewhere",
                                     "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "authorization, "
                                                                       "content-type"})
        assert code == 204
        assert "POST" in hdrs["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in hdrs["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert hdrs["Access-Control-Allow-Origin"] == "*"
        # Nothing else changes state: every other method on every endpoint is refused.
        token = f"?token={LISTEN_TOKEN}"
        for path in ["/", "/app.js", "/app.css", "/stream.mp3", "/stream.opus", "/api/status",
                     "/api/events", "/metrics"]:
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                code, _, _ = get(f"{base}{path}{token}", method=method)
                assert code == 405, (method, path, code)
        for method in ("PUT", "DELETE", "PATCH", "GET"):
            code, _, _ = get(f"{base}/api/metadata{token}", method=method)
            assert code == 405, (method, code)
    finally:
        server.terminate()  # SIGTERM: a clean stop
        code, err = finish(server, timeout=25)
    assert code == 0, err
    assert "Traceback" not in err


def test_request_limits_traversal_and_unknown_methods(cli: Cli) -> None:
    port = free_tcp_port()
    server = start(cli, port, "-t", "60")
    host = b"Host: x\r\nConnection: close\r\n"
    try:
        # No path reaches a file: there is no static folder, and routes are exact.
        for path in [b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/app.js/..",
                     b"/app.js/../../../etc/passwd", b"/..%2f..%2fetc%2fpasswd",
                     b"//etc/passwd", b"/stream.%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                     b"/stream.mp3/../../etc/passwd", b"/./app.js/%00", b"/%c0%ae%c0%ae/",
                     b"/api/../../etc/passwd", b"/\\..\\..\\etc\\passwd"]:
            code, headers, body = raw(port, b"GET " + path + b" HTTP/1.1\r\n" + host + b"\r\n")
            assert code in (400, 404), (path, code)
            assert b"root:" not in body and b"<" not in body, path
            assert headers.get("x-content-type-options") == "nosniff", path
        # Unknown and unsupported methods.
        for method in (b"TRACE", b"PROPFIND", b"MKCOL", b"PURGE", b"SEARCH"):
            code, _, _ = raw(port, method + b" / HTTP/1.1\r\n" + host + b"\r\n")
            assert code == 405, (method, code)
        for method in (b"FOO", b"GETT", b"G\x00T"):  # names HTTP does not know: the parser's 400
            code, _, _ = raw(port, method + b" / HTTP/1.1\r\n" + host + b"\r\n")
            assert code in (400, 405), (method, code)
        # Oversized request line, one oversized header, too many headers, oversized body.
        code, _, _ = raw(port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + host + b"\r\n")
        assert code in (400, 414), code
        code, _, _ = raw(port, b"GET / HTTP/1.1\r\n" + host + b"X-Big: " + b"b" * 9000 +
                         b"\r\n\r\n")
        assert code in (400, 431), code
        many = b"".join(b"X-%d: y\r\n" % i for i in range(100))
        code, _, _ = raw(port, b"GET / HTTP/1.1\r\n" + host + many + b"\r\n")
        assert code in (400, 431), code
        big = b'{"title": "' + b"x" * 20000 + b'"}'
        code, _, _ = raw(port, b"POST /api/metadata HTTP/1.1\r\n" + host +
                         f"Authorization: Bearer {META_TOKEN}\r\n".encode() +
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(big) + big)
        assert code == 413, code
        # Still serving normally afterwards.
        code, _, body = raw(port, b"GET /api/status HTTP/1.1\r\n" + host + b"\r\n")
        assert code == 200 and json.loads(body)["source"] == "tone:1000"
    finally:
        server.terminate()  # SIGTERM: a clean stop
        code, err = finish(server, timeout=25)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.cpu_heavy  # Chromium: never beside a test that judges audio in real time
def test_page_plays_over_https_with_the_listen_token_in_chromium(
        cli: Cli, tmp_path: Path) -> None:
    """Headless Chromium (no sound server needed: the element's clock is enough here): the
    page opened as https://…/?token=T plays, its events connect and count this listener; a
    browser logging in with basic auth plays too; one with no token is refused."""
    from playwright import sync_api

    cert, key = make_cert(tmp_path)
    port = free_tcp_port()
    server = start(cli, port, "--tls-cert", str(cert), "--tls-key", str(key),
                   "--listen-token", LISTEN_TOKEN, "-t", "60")
    base = f"https://127.0.0.1:{port}"
    state = ("() => ['audio', 'state', 'conn', 'listeners'].map((id) => id === 'audio' ? "
             "document.getElementById(id).currentTime : document.getElementById(id).textContent)")
    seen: list[list[object]] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu",
                                               "--autoplay-policy=no-user-gesture-required"])
            try:
                logins: list[tuple[str, sync_api.HttpCredentials | None]] = [
                    (f"{base}/?token={LISTEN_TOKEN}", None),
                    (f"{base}/", {"username": "me", "password": LISTEN_TOKEN})]
                for url, credentials in logins:
                    context = browser.new_context(ignore_https_errors=True,
                                                  http_credentials=credentials)
                    page = context.new_page()
                    page.goto(url, wait_until="load", timeout=15_000)
                    page.click("#play")
                    deadline = time.monotonic() + 12
                    while time.monotonic() < deadline:
                        now = page.evaluate(state)
                        if now[0] >= 2.0 and now[2] == "connected" and now[3] == "1":
                            break
                        time.sleep(0.25)
                    seen.append([url, credentials is not None, *now])
                    context.close()
                context = browser.new_context(ignore_https_errors=True)
                refused = context.request.get(f"{base}/api/status", timeout=15_000)
                seen.append(["no token", refused.status])
                context.close()
            finally:
                browser.close()
    finally:
        server.terminate()
        code, err = finish(server, timeout=20)
    assert code == 0, err
    for _url, _basic, played_s, page_state, conn, listeners in seen[:2]:
        # currentTime is a JS number: exactly 2 comes back as an int
        assert isinstance(played_s, (int, float)) and played_s >= 2.0, seen
        assert (page_state, conn, listeners) == ("playing", "connected", "1"), seen
    assert seen[2] == ["no token", 401], seen


def test_meta_reaches_an_https_serve_with_a_listen_token_from_the_same_settings(
        cli: Cli, tmp_path: Path) -> None:
    """`deskcast meta` with serve's own config file: HTTPS pinned to serve's (self-signed)
    certificate, and the title arrives; a certificate it was not told about is refused."""
    cert, key = make_cert(tmp_path)
    port = free_tcp_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[serve]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{cert}"\n'
                      f'tls_key = "{key}"\nlisten_token = "{LISTEN_TOKEN}"\n'
                      f'token = "{META_TOKEN}"\n')
    server = cli.start("-v", "--config", str(config), "serve", "-s", "tone:1000", "-t", "15")
    wait_for_line(server, "serving")
    other, _ = make_cert(tmp_path, "other")
    other_config = tmp_path / "other.toml"
    other_config.write_text(config.read_text().replace(str(cert), str(other)))
    try:
        good = cli.run("--config", str(config), "meta", "Band - Song")
        pinned_elsewhere = cli.run("--config", str(other_config), "meta", "x")
        context = ssl.create_default_context(cafile=str(cert))
        auth = base64.b64encode(f"x:{LISTEN_TOKEN}".encode()).decode()
        request = urllib.request.Request(f"https://127.0.0.1:{port}/api/status",
                                         headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            status = json.loads(resp.read())
    finally:
        code, err = finish(server, timeout=25)
    assert code == 0, err
    assert good.returncode == 0, good.stderr.decode()
    assert good.stdout.decode().strip() == "now playing: Band - Song"
    assert status["now_playing"]["title"] == "Song"
    assert "not the certificate" in one_error_line(pinned_elsewhere)
