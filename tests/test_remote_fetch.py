# ruff: noqa: F811  (the fixtures imported from tests.jwks_server are parameters here)
"""chat_security.remote.fetch: SPEC §14's fetch rules against a real local server.

Every server listens on 127.0.0.1; names other than ``localhost`` are made to
resolve there by a stand-in for ``socket.getaddrinfo``. No test reaches a
public address: where a name resolves to one, the fetch is refused before
connecting.
"""

from __future__ import annotations

import socket
import time

import pytest
import urllib3.response

from chat_security.remote.fetch import MAX_BYTES, USER_AGENT, FetchError, fetch_json
from tests.jwks_server import (  # noqa: F401  (jwks_server, jwks_tls_server: fixtures)
    JwksServer,
    jwks_server,
    jwks_server_process,
    jwks_tls_server,
    make_tls,
)

ED25519_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
KEY_SET = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X}]}
LOCAL = ["localhost", "127.0.0.1"]


def refused(url, **options) -> str:
    """The one line a refused fetch says."""
    with pytest.raises(FetchError) as caught:
        fetch_json(url, **options)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def resolve(monkeypatch):
    """``resolve({"idp.test": ["127.0.0.1"]})``: those names resolve so; returns the lookups."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def install(table: dict[str, list[str]]):
        def getaddrinfo(host, port, *args, **kwargs):
            if host not in table:
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (address, port, 0, 0) if ":" in address else (address, port),
                )
                for address in table[host]
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return lookups

    return install


@pytest.fixture
def bytes_read(monkeypatch):
    """The body bytes fetch_json read, chunk by chunk."""
    chunks: list[int] = []
    original = urllib3.response.HTTPResponse.read1

    def read1(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        chunks.append(len(data))
        return data

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read1", read1)
    return chunks


# -- what is fetched -----------------------------------------------------------------


def test_https_fetch_returns_the_document_and_says_who_asks(jwks_tls_server):
    jwks_tls_server.set_jwks(KEY_SET)
    url = jwks_tls_server.url(host="localhost")

    assert fetch_json(url, private_hosts=["localhost"]) == KEY_SET
    assert jwks_tls_server.count() == 1
    headers = jwks_tls_server.headers()
    assert headers["Host"] == f"localhost:{jwks_tls_server.port}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("chat-security/")


def test_any_json_is_returned_as_is_the_caller_judges_it(jwks_server):
    jwks_server.set_jwks([1, "two", None])
    assert fetch_json(jwks_server.url(), private_hosts=LOCAL) == [1, "two", None]


def test_http_is_allowed_for_a_listed_host_in_any_case(jwks_server):
    jwks_server.set_jwks(KEY_SET)
    assert fetch_json(jwks_server.url(host="localhost"), private_hosts=["LocalHost"]) == KEY_SET
    assert fetch_json(jwks_server.url(), private_hosts=["127.0.0.1"]) == KEY_SET
    assert jwks_server.count() == 2


def test_http_is_refused_for_a_host_not_listed(jwks_server, resolve):
    jwks_server.set_jwks(KEY_SET)
    message = refused(jwks_server.url(), private_hosts=["localhost"])
    assert "http:// is refused; use https://" in message

    resolve({"idp.test": ["127.0.0.1"]})
    assert "http:// is refused" in refused(f"http://idp.test:{jwks_server.port}/jwks")
    assert jwks_server.count() == 0


# -- where it may connect ------------------------------------------------------------


def test_an_ip_literal_that_is_loopback_is_refused_unless_listed(jwks_tls_server):
    jwks_tls_server.set_jwks(KEY_SET)
    message = refused(jwks_tls_server.url(host="127.0.0.1"), private_hosts=["localhost"])
    assert "127.0.0.1 is a loopback address" in message
    assert "JWKS_PRIVATE_HOSTS" in message
    assert jwks_tls_server.count() == 0

    assert fetch_json(jwks_tls_server.url(host="127.0.0.1"), private_hosts=["127.0.0.1"])


def test_a_name_that_resolves_to_loopback_is_refused_unless_listed(jwks_tls_server):
    jwks_tls_server.set_jwks(KEY_SET)
    url = jwks_tls_server.url(host="localhost")
    message = refused(url, private_hosts=["127.0.0.1"])  # the address listed, not the name
    assert "localhost resolves to" in message and "a loopback address" in message
    assert jwks_tls_server.count() == 0

    assert fetch_json(url, private_hosts=["localhost"]) == KEY_SET


@pytest.mark.parametrize(
    ("addresses", "named", "kind"),
    [
        (["93.184.216.34", "10.0.0.5"], "10.0.0.5", "a private"),
        (["::ffff:10.0.0.5"], "::ffff:10.0.0.5", "a private"),
        (["::ffff:127.0.0.1"], "::ffff:127.0.0.1", "a loopback"),
        (["169.254.169.254"], "169.254.169.254", "a link-local"),
        (["fe80::1"], "fe80::1", "a link-local"),
        (["0.0.0.0"], "0.0.0.0", "an unspecified"),
        (["224.0.0.1"], "224.0.0.1", "a multicast"),
        (["fc00::1"], "fc00::1", "a private"),
        (["240.0.0.1"], "240.0.0.1", "a reserved"),
        (["100.64.0.1"], "100.64.0.1", "a non-public"),
        (["64:ff9b::a00:5"], "64:ff9b::a00:5", "a private"),  # NAT64 of 10.0.0.5
        (["2002:a00:5::1"], "2002:a00:5::1", "a private"),  # 6to4 of 10.0.0.5
        (["64:ff9b::7f00:1"], "64:ff9b::7f00:1", "a loopback"),
    ],
)
def test_any_non_public_address_refuses_the_host(resolve, addresses, named, kind):
    resolve({"idp.test": addresses})
    message = refused("https://idp.test/jwks")
    assert f"idp.test resolves to {named}, {kind} address" in message


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path, monkeypatch, resolve):
    """DNS rebinding: a second lookup could answer another address; there is none."""
    tls = make_tls(tmp_path, names=("idp.test",))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_path))
    lookups = resolve({"idp.test": ["127.0.0.1"]})
    with JwksServer(tls) as server:
        server.set_jwks(KEY_SET)
        assert fetch_json(server.url(host="idp.test"), private_hosts=["idp.test"]) == KEY_SET
        assert server.headers()["Host"] == f"idp.test:{server.port}"
    assert lookups == ["idp.test"]


def test_the_next_address_is_tried_when_one_refuses_the_connection(jwks_server, resolve):
    jwks_server.set_jwks(KEY_SET)
    resolve({"idp.test": ["127.0.0.2", "127.0.0.1"]})  # the server listens on 127.0.0.1 only
    assert fetch_json(jwks_server.url(host="idp.test"), private_hosts=["idp.test"]) == KEY_SET


def test_a_closed_port_is_named():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = refused(f"http://127.0.0.1:{port}/jwks", private_hosts=LOCAL)
    assert f"could not connect to 127.0.0.1 port {port}" in message


def test_listed_ip_literals_are_compared_as_addresses():
    # [::1] listed as 0:0::1 passes the address check and fails only at connecting.
    message = refused("http://[::1]:1/jwks", private_hosts=["[0:0::1]"], timeout=1.0)
    assert "loopback" not in message and "http:// is refused" not in message


# -- TLS -----------------------------------------------------------------------------


def test_a_certificate_from_an_unknown_ca_is_refused(jwks_tls_server, tmp_path, monkeypatch):
    jwks_tls_server.set_jwks(KEY_SET)
    other = make_tls(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca_path))
    message = refused(jwks_tls_server.url(host="localhost"), private_hosts=LOCAL)
    assert "TLS certificate was refused" in message
    assert jwks_tls_server.count() == 0


def test_the_certificate_must_name_the_host_in_the_url_not_the_address(jwks_tls_server, resolve):
    """The server's certificate is good for localhost and 127.0.0.1, the address connected to."""
    jwks_tls_server.set_jwks(KEY_SET)
    resolve({"idp.test": ["127.0.0.1"]})
    message = refused(jwks_tls_server.url(host="idp.test"), private_hosts=["idp.test"])
    assert "TLS certificate was refused" in message and "idp.test" in message
    assert jwks_tls_server.count() == 0


# -- what comes back -----------------------------------------------------------------


def test_a_redirect_is_refused_and_not_followed(jwks_tls_server):
    jwks_tls_server.set_jwks(KEY_SET, path="/elsewhere")
    jwks_tls_server.set_route("/jwks", redirect=jwks_tls_server.url("/elsewhere", "localhost"))
    message = refused(jwks_tls_server.url(host="localhost"), private_hosts=LOCAL)
    assert "answered 302 (a redirect to 'https://localhost:" in message
    assert "redirects are not followed" in message
    assert jwks_tls_server.count("/jwks") == 1
    assert jwks_tls_server.count("/elsewhere") == 0


@pytest.mark.parametrize("status", [404, 500, 204])
def test_an_answer_other_than_200_is_refused(jwks_server, status):
    jwks_server.set_route("/jwks", status=status, body="" if status == 204 else "oops")
    assert f"answered {status}, not 200" in refused(jwks_server.url(), private_hosts=LOCAL)


def test_a_body_over_the_limit_is_refused_after_little_reading(jwks_server, bytes_read):
    jwks_server.set_route("/jwks", size=10_000_000)  # no Content-Length: read until too much
    started = time.monotonic()
    message = refused(jwks_server.url(), private_hosts=LOCAL)
    assert time.monotonic() - started < 0.8
    assert "sent more than 256 KiB" in message
    assert MAX_BYTES < sum(bytes_read) <= MAX_BYTES + 64 * 1024


def test_an_announced_body_over_the_limit_is_refused_before_reading(jwks_server, bytes_read):
    jwks_server.set_route("/jwks", size=10_000_000, content_length=True)
    message = refused(jwks_server.url(), private_hosts=LOCAL)
    assert "announces 10000000 bytes, more than 256 KiB" in message
    assert sum(bytes_read) == 0


def test_the_limit_can_be_lowered(jwks_server):
    jwks_server.set_jwks({"keys": ["x" * 2000]})
    assert "more than 1 KiB" in refused(jwks_server.url(), private_hosts=LOCAL, max_bytes=1024)


@pytest.mark.parametrize(
    "route",
    [
        {"drip": 20},  # a byte of body every 0.5 s
        {"drip_headers": True},  # a byte of the headers every 0.5 s
        {"hang": True},  # reads the request, never answers
        {"delay": 3, "json": KEY_SET},  # answers too late
    ],
    ids=["drip", "drip-headers", "hang", "late"],
)
def test_the_whole_fetch_has_one_deadline(jwks_server, route):
    jwks_server.set_route("/jwks", **route)
    started = time.monotonic()
    message = refused(jwks_server.url(), private_hosts=LOCAL, timeout=1.0)
    elapsed = time.monotonic() - started
    assert "did not answer within 1 s" in message
    assert 0.9 < elapsed < 1.5


def test_a_server_that_never_shakes_hands_times_out():
    with socket.socket() as silent:  # listens, never accepts: TCP connects, TLS never starts
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"https://localhost:{silent.getsockname()[1]}/jwks"
        started = time.monotonic()
        message = refused(url, private_hosts=LOCAL, timeout=1.0)
    assert "did not answer within 1 s" in message
    assert time.monotonic() - started < 1.5


def test_bytes_that_are_not_utf8_are_not_json(jwks_server):
    jwks_server.set_route("/jwks", garbage=5000)
    message = refused(jwks_server.url(), private_hosts=LOCAL)
    # The bytes after the first two are random: repr() quotes with " when they hold a '.
    assert "is not JSON (it is not UTF-8 text; it begins b" in message
    assert "begins b'\\xff\\xfe" in message or 'begins b"\\xff\\xfe' in message
    assert len(message) < 200


def test_text_that_is_not_json_is_quoted_briefly(jwks_server):
    jwks_server.set_route("/jwks", body="<html>" + "A" * 5000 + "</html>")
    message = refused(jwks_server.url(), private_hosts=LOCAL)
    assert "is not JSON (Expecting value: line 1 column 1 (char 0); it begins '<html>AAA" in message
    assert message.count("A") <= 80


def test_an_empty_body_is_not_json(jwks_server):
    jwks_server.set_route("/jwks", body="")
    assert "is not JSON" in refused(jwks_server.url(), private_hosts=LOCAL)


def test_a_compressed_body_is_refused(jwks_server):
    jwks_server.set_route("/jwks", json=KEY_SET, headers={"Content-Encoding": "gzip"})
    assert "compressed body ('gzip')" in refused(jwks_server.url(), private_hosts=LOCAL)


# -- the URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        (None, "empty"),
        ("https://", "names no host"),
        ("https:///jwks", "names no host"),
        ("jwks.json", "not an https:// URL"),
        ("ftp://idp.example/jwks", "not an https:// URL"),
        ("file:///etc/passwd", "not an https:// URL"),
        ("https://user:secret@idp.example/jwks", "user name or password"),
        ("https://idp.example@127.0.0.1/jwks", "user name or password"),
        ("https://idp.example/jw\x00ks", "'\\x00'"),
        ("https://idp.example/jwks\r\nX-Evil: 1", "'\\r'"),
        ("https://idp.example/j wks", "' '"),
        (" https://idp.example/jwks", "' '"),
        ("https://idp.éxample/jwks", "'é'"),
        ("https://idp.example\\@evil/jwks", "a backslash"),
        ("https://[::1/jwks", "not a valid URL"),
        ("https://idp.example:99999/jwks", "not a valid URL"),
        ("https://idp.example:port/jwks", "not a valid URL"),
        ("https://idp.example:0/jwks", "port 0"),
    ],
)
def test_malformed_urls_are_refused_with_a_fetch_error(url, says):
    message = refused(url)
    assert says in message
    assert "secret" not in message


def test_a_host_that_does_not_resolve_is_named(monkeypatch):
    def getaddrinfo(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert "the host nowhere.invalid was not found" in refused("https://nowhere.invalid/jwks")


def test_the_query_is_not_shown_in_messages(jwks_server):
    jwks_server.set_route("/jwks", status=404)
    message = refused(jwks_server.url("/jwks?api_key=hunter2"), private_hosts=LOCAL)
    assert "hunter2" not in message and "/jwks?…" in message


# -- the server in a process of its own ----------------------------------------------


def test_the_server_runs_as_its_own_process(tmp_path, monkeypatch):
    with jwks_server_process(tmp_path, tls=True, routes={"/jwks": {"json": KEY_SET}}) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.tls.ca_path))
        url = server.url(host="localhost")
        assert fetch_json(url, private_hosts=LOCAL) == KEY_SET
        server.set_jwks({"keys": []})  # re-read on the next request
        assert fetch_json(url, private_hosts=LOCAL) == {"keys": []}
        assert server.count() == 2
        assert server.count("/other") == 0
