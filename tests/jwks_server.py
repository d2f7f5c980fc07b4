"""A local identity provider's key-set server for tests: routes that misbehave on purpose.

It listens on 127.0.0.1 (a free port), over http or, with :func:`make_tls`,
https with a throwaway CA. Point ``SSL_CERT_FILE`` at the CA (the
``jwks_tls_server`` fixture does) and a client using the default trust store
(``fetch_json``) trusts it. Every request is counted by path.

A route is a dict that JSON can carry, so a server in another process reads
the same routes from a file:

* ``{"json": document}``: 200 with the document (``set_jwks``);
* ``{"status": 404, "body": "text"}``: that status and body;
* ``{"redirect": "/elsewhere"}``: 302 to it;
* ``{"garbage": 2000}``: that many random bytes, said to be JSON;
* ``{"size": 10_000_000, "content_length": True}``: a body that large, announced or not;
* ``{"drip": 20, "interval": 0.5}``: a body of that many bytes, one byte per interval;
* ``{"drip_headers": True, "interval": 0.5}``: the status line and headers a byte at a time;
* ``{"hang": True}``: reads the request and never answers;

and any route may add ``"delay": seconds`` before answering (the first two
also ``"status"`` and ``"headers"``). A path with no route answers 404.

In this process: :class:`JwksServer`, the ``jwks_server`` and ``jwks_tls_server``
fixtures. As a process of its own (for tests whose workers are other processes):
``python -m tests.jwks_server --port-file F [--routes R] [--tls]``, which writes
``{"port": …, "ca_path": …}`` to F once it listens, re-reads R (default:
``routes.json`` beside F) on each request and answers its counts at
``/_count``; :func:`jwks_server_process` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parent.parent
#: The longest any handler waits or drips: a forgotten client never holds a thread longer.
LONGEST_WAIT = 30.0


# -- certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """A throwaway CA and a server certificate it signed, as PEM files."""

    ca_path: Path
    cert_path: Path
    key_path: Path

    @classmethod
    def in_directory(cls, directory: Path) -> Tls:
        """The files :func:`make_tls` writes to ``directory``."""
        return cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def make_tls(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Tls:
    """A new CA in ``directory`` and a certificate for ``names`` (host names or IP literals)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat_security test CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    leaf = (
        _builder(leaf_name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls.in_directory(directory)
    tls.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    tls.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


def _builder(subject, issuer, public_key, now) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- the server ----------------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: Tls | None, routes: dict[str, dict], routes_file: Path | None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls_context = tls.server_context() if tls else None
        self.routes = routes
        self.routes_file = routes_file
        self.counts: Counter[str] = Counter()
        self.headers: dict[str, dict[str, str]] = {}  # the last request's, by path
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake happens here, in the request's thread: a client that
        # connects and never shakes hands does not hold up the accept loop.
        if self.tls_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(5)
        try:
            tls_socket = self.tls_context.wrap_socket(request, server_side=True)
        except OSError:
            return None  # e.g. the client refused the certificate
        try:
            super().finish_request(tls_socket, client_address)
        finally:
            tls_socket.close()

    def route(self, path: str) -> dict | None:
        if self.routes_file is not None:
            try:
                return json.loads(self.routes_file.read_text()).get(path)
            except (OSError, ValueError):
                return {"status": 500, "body": "the routes file is unreadable"}
        with self.lock:
            return self.routes.get(path)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    timeout = 10  # the socket's: a silent client frees its thread

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_count":
            with self.server.lock:
                counts = json.dumps(dict(self.server.counts)).encode()
            return self._send(200, counts)
        with self.server.lock:
            self.server.counts[path] += 1
            self.server.headers[path] = dict(self.headers.items())
        route = self.server.route(path)
        with contextlib.suppress(OSError):  # the client went away, as fetch_json does on purpose
            self._answer(route)

    def _answer(self, route: dict | None) -> None:
        stopping = self.server.stopping
        if route is None:
            return self._send(404, b"no such route")
        if route.get("delay"):
            stopping.wait(min(route["delay"], LONGEST_WAIT))
        interval = route.get("interval", 0.5)
        if route.get("hang"):
            stopping.wait(LONGEST_WAIT)
        elif "json" in route:
            body = json.dumps(route["json"]).encode()
            self._send(route.get("status", 200), body, **route.get("headers", {}))
        elif "redirect" in route:
            self._send(route.get("status", 302), b"", Location=route["redirect"])
        elif "garbage" in route:
            self._send(200, b"\xff\xfe" + os.urandom(route["garbage"]))
        elif "size" in route:
            self._big(route["size"], route.get("content_length", False))
        elif "drip" in route:
            self._drip(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % route["drip"], 0)
            self._drip(b" " * route["drip"], interval)
        elif route.get("drip_headers"):
            self._drip(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}", interval)
        else:
            body = route.get("body", "").encode()
            self._send(route.get("status", 200), body, **route.get("headers", {}))

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _big(self, size: int, announce: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if announce:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"x" * 65536
        for start in range(0, size, len(chunk)):
            if self.server.stopping.is_set():
                return
            self.wfile.write(chunk[: size - start])

    def _drip(self, data: bytes, interval: float) -> None:
        """``data`` a byte per ``interval`` (all at once for 0), for at most LONGEST_WAIT."""
        if not interval:
            self.wfile.write(data)
            self.wfile.flush()
            return
        for i in range(min(len(data), int(LONGEST_WAIT / interval))):
            if self.server.stopping.wait(interval if i else 0):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()


class _Endpoints:
    """What a test does with a server, in this process or another."""

    port: int
    tls: Tls | None

    def url(self, path: str = "/jwks", host: str = "127.0.0.1") -> str:
        """The URL of ``path``; ``host`` may be any name that reaches 127.0.0.1."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def set_jwks(self, document: Any, path: str = "/jwks") -> None:
        """Serve ``document`` (a key set, or anything JSON) at ``path`` from now on."""
        self.set_route(path, json=document)

    def set_route(self, path: str, **route: Any) -> None:
        raise NotImplementedError

    def count(self, path: str = "/jwks") -> int:
        raise NotImplementedError


class JwksServer(_Endpoints):
    """The server in a thread of this process; a context manager that always stops it."""

    def __init__(self, tls: Tls | None = None, routes_file: Path | None = None) -> None:
        self.tls = tls
        self._server = _HttpServer(tls, {}, routes_file)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.stopping.set()  # hanging and dripping handlers end
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def set_route(self, path: str, **route: Any) -> None:
        """Answer ``path`` as ``route`` says (see the module's docstring) from now on."""
        with self._server.lock:
            self._server.routes[path] = route

    def count(self, path: str = "/jwks") -> int:
        """How many requests for ``path`` arrived so far."""
        with self._server.lock:
            return self._server.counts[path]

    def headers(self, path: str = "/jwks") -> dict[str, str]:
        """The headers of the last request for ``path``."""
        with self._server.lock:
            return dict(self._server.headers.get(path, {}))

    def wait(self) -> None:
        """Serve until the process ends (``python -m tests.jwks_server``)."""
        self._thread.join()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    """A plain-http server (list 127.0.0.1 in ``private_hosts`` to fetch from it)."""
    with JwksServer() as server:
        yield server


@pytest.fixture
def jwks_tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JwksServer]:
    """An https server whose CA is the trust store (``SSL_CERT_FILE``) for the test."""
    tls = make_tls(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_path))
    with JwksServer(tls) as server:
        yield server


# -- as a process of its own ---------------------------------------------------------


class JwksProcess(_Endpoints):
    """A server running as another process (:func:`jwks_server_process`)."""

    def __init__(self, port: int, tls: Tls | None, routes_file: Path) -> None:
        self.port, self.tls, self.routes_file = port, tls, routes_file

    def set_route(self, path: str, **route: Any) -> None:
        """Answer ``path`` as ``route`` says from the next request on (the file is replaced)."""
        routes = json.loads(self.routes_file.read_text())
        routes[path] = route
        _write_atomically(self.routes_file, json.dumps(routes))

    def count(self, path: str = "/jwks") -> int:
        """How many requests for ``path`` the process answered so far."""
        context = ssl.create_default_context(cafile=self.tls.ca_path) if self.tls else None
        with urllib.request.urlopen(self.url("/_count"), timeout=5, context=context) as answer:
            return int(json.load(answer).get(path, 0))


@contextlib.contextmanager
def jwks_server_process(
    directory: Path, *, tls: bool = False, routes: dict[str, dict] | None = None
) -> Iterator[JwksProcess]:
    """Run ``python -m tests.jwks_server`` with its files in ``directory``; always stop it."""
    directory.mkdir(parents=True, exist_ok=True)
    port_file, routes_file = directory / "port.json", directory / "routes.json"
    port_file.unlink(missing_ok=True)
    _write_atomically(routes_file, json.dumps(routes or {}))
    command = [sys.executable, "-m", "tests.jwks_server", "--port-file", str(port_file)]
    command += ["--routes", str(routes_file)] + (["--tls"] if tls else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the JWKS server did not start (exit code {process.poll()})")
            time.sleep(0.02)
        started = json.loads(port_file.read_text())
        certificates = Tls.in_directory(Path(started["ca_path"]).parent) if tls else None
        yield JwksProcess(started["port"], certificates, routes_file)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True, help="written once listening")
    parser.add_argument("--routes", type=Path, help="JSON {path: route} (F's folder/routes.json)")
    parser.add_argument("--tls", action="store_true", help="https with a new CA beside F")
    options = parser.parse_args(argv)
    routes_file = options.routes or options.port_file.parent / "routes.json"
    if not routes_file.exists():
        _write_atomically(routes_file, "{}")
    tls = make_tls(options.port_file.parent / "tls") if options.tls else None
    with JwksServer(tls, routes_file=routes_file) as server:
        started = {"port": server.port, "ca_path": str(tls.ca_path) if tls else None}
        _write_atomically(options.port_file, json.dumps(started))
        server.wait()


if __name__ == "__main__":
    main()
