"""One GET of an identity provider's JSON document, on SPEC §14's terms.

:func:`fetch_json` is the only place the package reaches the network. It
decides nothing about what the document says (``sources`` does); it makes
sure that fetching it cannot be turned against the site:

* https only: http is allowed for the hosts the site lists in
  ``JWKS_PRIVATE_HOSTS`` (an IdP on the local network, tests);
* the host is resolved once, and refused when any of its addresses is
  private, loopback, link-local, multicast, reserved or unspecified (IPv4
  inside IPv6 included), unless it is listed. The connection then goes to the
  address that was checked, with TLS verified for the host name, so a DNS
  answer that changes between the check and the connection (DNS rebinding)
  reaches nothing new;
* no redirects and no retries: a 3xx is an error that names its Location;
* one deadline for everything (name lookup, connect, TLS, headers, body):
  reads wait only for the time left, and at the deadline a watchdog shuts the
  socket down, so a server that sends a byte every half second fails on time;
* at most ``max_bytes``: a larger Content-Length is refused before reading,
  and reading stops as soon as more arrived.

Every failure is a :class:`FetchError` whose text is one line for the panel,
the CLI and the log: it names the URL (its query shown as ``?…``) and never
quotes more than a few dozen characters of what the server sent.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from ..exceptions import ChatSecurityError


def _version() -> str:
    """The installed distribution's version (the package imports nothing from its root)."""
    try:
        return importlib.metadata.version("chat-security")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


#: The whole fetch, from the name lookup to the body's last byte (SPEC §14).
TIMEOUT_SECONDS = 5.0
MAX_BYTES = 256 * 1024
USER_AGENT = f"chat-security/{_version()}"
#: How much of anything the server sent an error message quotes.
QUOTE_CHARS = 60
_CHUNK = 16 * 1024
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: What can fail between connecting and the last byte: socket and TLS errors
#: (OSError), urllib3's and http.client's protocol errors, a closed SSL socket (ValueError).
_TRANSPORT_ERRORS = (OSError, ValueError, HTTPError, http.client.HTTPException)


class FetchError(ChatSecurityError):
    """A document could not be fetched or is not JSON; ``str()`` is one line saying why."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower case, an IPv6 literal without brackets
    port: int
    request_target: str  # path and query
    host_header: str
    shown: str  # the URL for messages: no query, no user info
    listed: bool  # in private_hosts


def fetch_json(
    url: str,
    *,
    private_hosts: Iterable[str] = (),
    timeout: float = TIMEOUT_SECONDS,
    max_bytes: int = MAX_BYTES,
) -> Any:
    """GET ``url`` and return its body parsed as JSON.

    ``private_hosts`` are the host names and IP literals (as written in URLs,
    any case) that may resolve to non-public addresses and may use http.
    Raises :class:`FetchError` for every failure, the URL's included.
    """
    deadline = time.monotonic() + timeout
    if isinstance(private_hosts, str):  # one host, not its characters
        private_hosts = [private_hosts]
    target = _parse(url, {_host_key(host) for host in private_hosts})
    addresses = _resolve(target, deadline, timeout)
    if not target.listed:
        for address in addresses:
            kind = _non_public_kind(address)
            if kind is not None:
                what = (
                    f"{address} is {kind} address"
                    if _host_key(target.host) == _host_key(address)
                    else f"{target.host} resolves to {address}, {kind} address"
                )
                raise FetchError(
                    f"{target.shown}: {what}; list the host in "
                    "CHAT_SECURITY['JWKS_PRIVATE_HOSTS'] to allow it."
                )
    body = _get(target, addresses, deadline, timeout, max_bytes)
    return _parse_json(body, target)


# -- the URL -------------------------------------------------------------------------


def _host_key(host: str) -> str:
    """How a host is compared with ``private_hosts``: lower case, IP literals normalized."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _parse(url: str, listed_hosts: set[str]) -> _Target:
    if not isinstance(url, str) or not url:
        raise FetchError("The URL is empty.")
    odd = next((c for c in url if not "!" <= c <= "~" or c == "\\"), None)
    if odd is not None:
        what = "a backslash" if odd == "\\" else f"the character {odd!r}"
        raise FetchError(
            f"The URL {_quote(url)} contains {what}; percent-encode it "
            "(host names in their ASCII xn-- form)."
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"{_quote(url)} is not a valid URL ({exc}).") from exc
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in ("https", "http"):
        raise FetchError(f"{_quote(url)} is not an https:// URL.")
    if "@" in parts.netloc:
        raise FetchError(f"{scheme}://{host}…: a user name or password in the URL is refused.")
    if not host:
        raise FetchError(f"{_quote(url)} names no host.")
    default_port = 443 if scheme == "https" else 80
    port = default_port if port is None else port
    if port == 0:
        raise FetchError(f"{_quote(url)} names port 0.")
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    shown = f"{scheme}://{host_header}{parts.path}{'?…' if parts.query else ''}"
    listed = _host_key(host) in listed_hosts
    if scheme == "http" and not listed:
        raise FetchError(
            f"{shown}: http:// is refused; use https:// (http is allowed only for "
            "the hosts in CHAT_SECURITY['JWKS_PRIVATE_HOSTS'])."
        )
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme, host, port, request_target, host_header, shown, listed)


# -- the addresses -------------------------------------------------------------------


def _resolve(target: _Target, deadline: float, timeout: float) -> list[str]:
    """The host's addresses, looked up once and within the deadline.

    ``getaddrinfo`` has no timeout of its own, so it runs in a daemon thread
    that is left to finish on its own if the deadline passes first.
    """
    answer: list[Any] = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            answer.append(exc)

    thread = threading.Thread(target=lookup, name="chat_security fetch lookup", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not answer:
        raise FetchError(f"{target.shown} did not answer within {timeout:g} s (name lookup).")
    if isinstance(answer[0], Exception):
        reason = getattr(answer[0], "strerror", None) or answer[0]
        raise FetchError(f"{target.shown}: the host {target.host} was not found ({reason}).")
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in answer[0]:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    if not addresses:
        raise FetchError(f"{target.shown}: the host {target.host} has no IP address.")
    return addresses


def _non_public_kind(address: str) -> str | None:
    """What kind of non-public address ``address`` is ("a loopback", …); None: public."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried in IPv6 (mapped, 6to4, NAT64) is where the packets go.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        ip = embedded or ip
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"{'an' if kind == 'unspecified' else 'a'} {kind.replace('_', '-')}"
    return None if ip.is_global else "a non-public"


# -- the exchange --------------------------------------------------------------------


class _Watchdog:
    """Shuts the connection's socket down at the deadline, so a blocked read returns.

    Socket timeouts bound each read, not their sum: a server that trickles its
    headers a byte at a time would hold the fetch for hours. The lock keeps the
    watchdog from touching a socket the fetch has already closed.
    """

    def __init__(self, connection: HTTPConnection, deadline: float) -> None:
        self.connection = connection
        self.sock: socket.socket | None = None  # pinned once connected: see _exchange
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sock = self.sock if self.sock is not None else self.connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # already shut or closed by its peer
                    sock.shutdown(socket.SHUT_RDWR)


def _get(
    target: _Target, addresses: list[str], deadline: float, timeout: float, max_bytes: int
) -> bytes:
    """The body, from the first of ``addresses`` that accepts a connection."""
    for index, address in enumerate(addresses):
        left = max(0.001, deadline - time.monotonic())
        connection: HTTPConnection
        if target.scheme == "https":
            # server_hostname: SNI and the certificate check are for the name in the URL,
            # though the connection goes to the address that was checked.
            connection = HTTPSConnection(
                address,
                target.port,
                timeout=left,
                server_hostname=target.host,
                cert_reqs="CERT_REQUIRED",
            )
        else:
            connection = HTTPConnection(address, target.port, timeout=left)
        try:
            with _Watchdog(connection, deadline) as watchdog:
                try:
                    connection.connect()
                except NewConnectionError:
                    if index + 1 < len(addresses) and time.monotonic() < deadline:
                        continue
                    raise
                return _exchange(connection, watchdog, target, deadline, timeout, max_bytes)
        except FetchError:
            raise
        except _TRANSPORT_ERRORS as exc:
            timed_out = watchdog.fired or time.monotonic() >= deadline
            raise FetchError(_describe(exc, target, address, timeout, timed_out)) from exc
        finally:
            connection.close()
    raise AssertionError("unreachable: _resolve returns at least one address")


def _exchange(
    connection: HTTPConnection,
    watchdog: _Watchdog,
    target: _Target,
    deadline: float,
    timeout: float,
    max_bytes: int,
) -> bytes:
    # A response with "Connection: close" takes the socket from the connection
    # (connection.sock becomes None), so the socket is kept here for the reads.
    sock = watchdog.sock = connection.sock
    assert sock is not None
    headers = {
        "Host": target.host_header,
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Connection": "close",
    }
    connection.request(
        "GET", target.request_target, headers=headers, preload_content=False, decode_content=False
    )
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    connection.timeout = sock.gettimeout()  # getresponse() sets it on the socket
    response = connection.getresponse()
    try:
        _check_answer(response.status, response.headers, target, max_bytes)
        chunks: list[bytes] = []
        received = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline")
            if sock.fileno() != -1:  # closed by http.client once the announced length arrived
                sock.settimeout(left)
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            received += len(chunk)
            if received > max_bytes:
                raise FetchError(f"{target.shown} sent more than {_size(max_bytes)}.")
    finally:
        response.close()


def _check_answer(status: int, headers: Any, target: _Target, max_bytes: int) -> None:
    if 300 <= status < 400:
        location = headers.get("Location")
        where = f"a redirect to {_quote(location)}" if location else "a redirect"
        raise FetchError(
            f"{target.shown} answered {status} ({where}); redirects are not followed: "
            "give the final URL."
        )
    if status != 200:
        raise FetchError(f"{target.shown} answered {status}, not 200.")
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise FetchError(
            f"{target.shown} sent a compressed body ({_quote(encoding)}), which was not asked for."
        )
    try:
        announced = int(headers.get("Content-Length") or 0)
    except ValueError:
        announced = 0  # http.client reads such a body to the connection's end
    if announced > max_bytes:
        raise FetchError(
            f"{target.shown} announces {announced} bytes, more than {_size(max_bytes)}."
        )


def _describe(
    exc: BaseException, target: _Target, address: str, timeout: float, timed_out: bool
) -> str:
    """The one line for a failure of the connection or the protocol."""
    where = f"{address} port {target.port}"
    if isinstance(exc, NewConnectionError):
        reason = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        return f"{target.shown}: could not connect to {where} ({_reason(reason)})."
    if timed_out or isinstance(exc, TimeoutError | Urllib3Timeout):
        return f"{target.shown} did not answer within {timeout:g} s."
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{target.shown}: its TLS certificate was refused ({exc.verify_message})."
    if isinstance(exc, ssl.SSLError):
        return f"{target.shown}: TLS with {where} failed ({_clip(_reason(exc))})."
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionError):
        return f"{target.shown}: {where} closed the connection without a complete answer."
    if isinstance(exc, http.client.BadStatusLine):
        return f"{target.shown}: {where} did not answer in HTTP."
    return f"{target.shown}: {type(exc).__name__}: {_clip(_reason(exc))}"


# -- the body ------------------------------------------------------------------------


def _parse_json(body: bytes, target: _Target) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    except RecursionError:
        problem = "it is nested too deeply"
    except ValueError as exc:
        problem = str(exc)
    if not body:
        begins = "it is empty"
    elif problem.startswith("it is not UTF-8"):
        begins = f"it begins {_clip(repr(body[: QUOTE_CHARS // 4]))}"
    else:
        begins = f"it begins {_quote(body.decode('utf-8', 'replace'))}"
    raise FetchError(f"{target.shown} is not JSON ({problem}; {begins}).")


# -- text for messages ---------------------------------------------------------------


def _clip(text: str, limit: int = QUOTE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str) -> str:
    """Untrusted text for a message: printable, short, quoted."""
    shown = "".join(c if c.isprintable() else "?" for c in text[: QUOTE_CHARS + 1])
    return repr(_clip(shown))


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc)


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"
