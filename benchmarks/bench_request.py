"""What chat_security's HTTP middleware adds to a whole Django request, in process.

    .venv/bin/python benchmarks/bench_request.py [--n 60] [--rounds 120] [--n-rsa-fresh 20]
        [--metrics]

Calls ``django.core.handlers.wsgi.WSGIHandler`` directly (no server, no
socket) with hand-made WSGI environs. Baseline: Django's seven ``startproject``
middleware and a small JSON view. Candidate: the same plus
``ChatSecurityMiddleware`` guarding that view (``benchmarks/request_settings.py``,
SQLite in a temporary file, local-memory cache; keys made with
``manage.py chat_security generate-secret`` / ``add-public-key``). Cases:

1. HS256, the same ~750-byte token on every request (the chat hot path)
2. HS256, a fresh token each request (pre-signed, so signing is not timed)
3./4. RS256 repeated, with / without ``kid``
5./6. RS256 fresh, with / without ``kid``
7. a logged-in page rendering ``{% chat_identity_token %}`` against the same
   page without the tag (both through the candidate stack; 7b compares it
   with the untagged page on the plain Django stack)

Every round runs every case (in a shuffled order) for ``--n`` requests (fresh
RS256: ``--n-rsa-fresh``, as each needs its own RSA signature; pages: n/4);
the report gives each case's fastest round in µs/request and its ratio to the
baseline's fastest round: on a shared machine, other work only ever makes a
round slower, so many short rounds and their fastest one measure the code
rather than the neighbours. It also prints the median of the per-round ratios
and their range. Fresh tokens are never reused across rounds. It also counts
database queries on warm verified requests. The default run takes about a
minute on a 2-core machine. ``--metrics`` runs the candidate with
``CHAT_SECURITY["METRICS"]`` on (each counted request also counts into
prometheus_client; needs the ``metrics`` extra).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.bench_common import temporary_site  # noqa: E402

_TMP = temporary_site("bench-request-")
if "--metrics" in sys.argv:  # read by request_settings, so before django.setup()
    os.environ["CHAT_BENCH_METRICS"] = "1"

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from benchmarks.bench_common import TokenMaker, machine_line  # noqa: E402

API = "/chat/api/whoami"
TARGETS = {
    "1 HS256 repeated": 1.05,
    "2 HS256 fresh": 1.30,
    "3 RS256 repeated, kid": 1.05,
    "4 RS256 repeated, no kid": 1.05,
    "5 RS256 fresh, kid": 1.55,
    "6 RS256 fresh, no kid": 1.55,
    "7 page with tag": 1.05,
}


# -- keys and tokens ----------------------------------------------------------------


def command(*args: str) -> dict:
    out = io.StringIO()
    call_command("chat_security", *args, stdout=out)
    return json.loads(out.getvalue())


def make_keys() -> tuple[dict, dict, rsa.RSAPrivateKey]:
    """An HS256 secret and a registered RS256 public key, through the CLI."""
    call_command("chat_security", "security", "on", stdout=io.StringIO())
    secret = command("generate-secret")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_file = os.path.join(_TMP, "client_public.pem")
    with open(pem_file, "wb") as out:
        out.write(pem)
    public = command("add-public-key", pem_file)
    return secret, public, private


# -- requests -----------------------------------------------------------------------


def base_environ(path: str, **headers: str) -> dict:
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT": "application/json",
        "HTTP_USER_AGENT": "bench_request/1.0",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    environ.update(headers)
    return environ


def bearer(token: str) -> dict:
    return base_environ(API, HTTP_AUTHORIZATION=f"Bearer {token}")


def _start_response(status: str, headers: list, exc_info: object = None) -> None:
    _start_response.status = status  # type: ignore[attr-defined]


def call(handler: WSGIHandler, environ: dict) -> str:
    """One request as a WSGI server makes it: fresh environ and input, body drained, closed."""
    env = dict(environ)
    env["wsgi.input"] = io.BytesIO(b"")
    response = handler(env, _start_response)
    for _chunk in response:
        pass
    response.close()
    return _start_response.status  # type: ignore[attr-defined]


def expect_ok(handler: WSGIHandler, environ: dict, what: str) -> None:
    env = dict(environ)
    env["wsgi.input"] = io.BytesIO(b"")
    response = handler(env, _start_response)
    body = b"".join(response)
    response.close()
    status = _start_response.status  # type: ignore[attr-defined]
    if not status.startswith("200"):
        raise SystemExit(f"{what}: {status} {body[:200]!r}")


class Case:
    """``n`` requests per round through one handler; ``environs`` cycle (fresh tokens: n per
    round, never reused)."""

    def __init__(self, name: str, handler: WSGIHandler, environs: list[dict], n: int) -> None:
        self.name, self.handler, self.environs, self.n = name, handler, environs, n
        self.times: list[float] = []
        self.next = 0

    def run(self) -> None:
        handler, n = self.handler, self.n
        if len(self.environs) == 1:
            batch = self.environs * n
        else:
            batch = self.environs[self.next : self.next + n]
            self.next += n
        gc.collect()
        failed = 0
        start = time.perf_counter()
        for environ in batch:
            if call(handler, environ)[0] != "2":
                failed += 1
        self.times.append((time.perf_counter() - start) / n * 1e6)
        if failed:  # a refused token answers fast: such a figure would mean nothing
            raise SystemExit(f"{self.name}: {failed} of {n} requests did not answer 2xx")


def queries(handler: WSGIHandler, environs: list[dict]) -> int:
    """Database queries made by these requests, after one uncounted request to warm up."""
    call(handler, environs[0])
    with CaptureQueriesContext(connection) as ctx:
        for environ in environs:
            call(handler, environ)
    return len(ctx.captured_queries)


# -- main ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="requests per case per round")
    parser.add_argument("--rounds", type=int, default=120)
    parser.add_argument(
        "--n-rsa-fresh",
        type=int,
        default=20,
        help="requests per round for the fresh RS256 cases (each needs its own RSA signature)",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="Prometheus metrics on (CHAT_SECURITY METRICS)"
    )
    args = parser.parse_args()
    n, rounds, n_rsa = max(1, args.n), max(1, args.rounds), max(1, min(args.n, args.n_rsa_fresh))
    print(machine_line())
    from chat_security import metrics  # imports prometheus_client only when on

    print(f"Prometheus metrics: {'on' if metrics.enabled() else 'off'}")

    call_command("migrate", verbosity=0, interactive=False)
    secret, public, private = make_keys()
    hs = TokenMaker(secret["secret"], "HS256", secret["kid"])
    rs_kid = TokenMaker(private, "RS256", public["kid"])
    rs_nokid = TokenMaker(private, "RS256", None)

    t0 = time.perf_counter()
    hs_token, rs_token, rs_nokid_token = hs.make(0), rs_kid.make(0), rs_nokid.make(0)
    hs_fresh = [bearer(hs.make(i)) for i in range(1, 1 + n * rounds + 1)]
    rs_fresh = [bearer(rs_kid.make(i)) for i in range(1, 1 + n_rsa * rounds + 1)]
    rs_nokid_fresh = [bearer(rs_nokid.make(i)) for i in range(1, 1 + n_rsa * rounds + 1)]
    print(
        f"token length: HS256 {len(hs_token)} B, RS256 with kid {len(rs_token)} B, "
        f"RS256 without kid {len(rs_nokid_token)} B "
        f"({len(hs_fresh) + len(rs_fresh) + len(rs_nokid_fresh)} fresh tokens signed in "
        f"{time.perf_counter() - t0:.1f} s, not timed)"
    )

    with override_settings(MIDDLEWARE=settings.DJANGO_MIDDLEWARE):
        baseline = WSGIHandler()
    candidate = WSGIHandler()

    # A logged-in user and its session cookie, for case 7.
    user = get_user_model().objects.create_user(
        "alice", "alice.example@example.com", first_name="Alice", last_name="Example"
    )
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    plain_page = base_environ("/page/plain", HTTP_COOKIE=cookie, HTTP_ACCEPT="text/html")
    tagged_page = base_environ("/page/tagged", HTTP_COOKIE=cookie, HTTP_ACCEPT="text/html")

    # Warm up (and check) every path before timing: the first tagged page signs and
    # keeps its token in the session; each fresh list keeps its first token for this.
    expect_ok(baseline, bearer(hs_token), "baseline")
    for environ in (bearer(hs_token), bearer(rs_token), bearer(rs_nokid_token)):
        expect_ok(candidate, environ, "candidate")
    for environ in (hs_fresh.pop(), rs_fresh.pop(), rs_nokid_fresh.pop()):
        expect_ok(candidate, environ, "candidate fresh")
    for handler, environ in ((candidate, plain_page), (candidate, tagged_page)):
        expect_ok(handler, environ, "page")
    expect_ok(baseline, plain_page, "page")
    for handler, environ in ((baseline, bearer(hs_token)), (candidate, bearer(hs_token))):
        for _ in range(200):
            call(handler, environ)

    cases = [
        Case("baseline (Django only)", baseline, [bearer(hs_token)], n),
        Case("1 HS256 repeated", candidate, [bearer(hs_token)], n),
        Case("2 HS256 fresh", candidate, hs_fresh, n),
        Case("3 RS256 repeated, kid", candidate, [bearer(rs_token)], n),
        Case("4 RS256 repeated, no kid", candidate, [bearer(rs_nokid_token)], n),
        Case("5 RS256 fresh, kid", candidate, rs_fresh, n_rsa),
        Case("6 RS256 fresh, no kid", candidate, rs_nokid_fresh, n_rsa),
        Case("page, no tag (Django only)", baseline, [plain_page], max(1, n // 4)),
        Case("page, no tag", candidate, [plain_page], max(1, n // 4)),
        Case("7 page with tag", candidate, [tagged_page], max(1, n // 4)),
    ]
    by_name = {case.name: case for case in cases}
    shuffle = random.Random(12)
    t0 = time.perf_counter()
    for _ in range(rounds):
        order = cases[:]
        shuffle.shuffle(order)
        for case in order:
            case.run()
    elapsed = time.perf_counter() - t0

    base = by_name["baseline (Django only)"]
    print(
        f"\n{rounds} rounds, {n} requests per case per round ({n_rsa} for fresh RS256, "
        f"{max(1, n // 4)} for pages), timed {elapsed:.1f} s. µs/req and ratio: the fastest\n"
        "round of each case (the least disturbed); median: of the ratios of each round to the\n"
        "baseline of the same round; then their range.\n"
    )
    head = f"{'case':32s} {'µs/req':>8s} {'+µs':>6s} {'ratio':>6s} {'target':>6s}"
    print(f"{head}       median  rounds' ratios")
    report(base, None)
    for case in cases[1:7]:
        report(case, base)
    print()
    plain = by_name["page, no tag"]
    report(plain, None)
    report(by_name["7 page with tag"], plain)
    print("7b: the tagged page above against the untagged page without chat_security:")
    report(by_name["page, no tag (Django only)"], None)
    report(by_name["7 page with tag"], by_name["page, no tag (Django only)"], target=False)

    # Database queries on warm verified requests. With a process-local cache the key
    # snapshot is re-checked against the database once per KEY_CACHE_SECONDS (default
    # 1 s), so a batch spanning more than that shows those few polls.
    single = {
        name: queries(candidate, [environ])
        for name, environ in (
            ("HS256", bearer(hs_token)),
            ("RS256 kid", bearer(rs_token)),
            ("RS256 no kid", bearer(rs_nokid_token)),
        )
    }
    batch = [bearer(hs_token)] * (2 * n)
    start = time.perf_counter()
    in_batch = queries(candidate, batch)
    took = time.perf_counter() - start
    print(
        "\nDB queries per warm verified request (expected 0): "
        + ", ".join(f"{name} {count}" for name, count in single.items())
        + f"; {in_batch} in {len(batch)} consecutive HS256 requests over {took:.1f} s"
    )


def report(case: Case, ref: Case | None, *, target: bool = True) -> None:
    """One line: the fastest round's µs/request (the round least disturbed by anything
    else on the machine); against ``ref``, the µs added and the ratio of the fastest
    rounds, the target, the median of the per-round ratios and their range."""
    us = min(case.times)
    if ref is None:
        print(f"{case.name:32s} {us:8.1f} {'':6s} {1:6.3f}")
        return
    added = us - min(ref.times)
    ratio = us / min(ref.times)
    per_round = [c / b for c, b in zip(case.times, ref.times, strict=True)]
    goal = TARGETS.get(case.name) if target else None
    verdict = ("ok  " if ratio <= goal else "OVER") if goal else ""
    goal_text = f"{goal:6.2f}" if goal else ""
    print(
        f"{case.name:32s} {us:8.1f} {added:+6.0f} {ratio:6.3f} {goal_text:>6s} {verdict:4s}  "
        f"{statistics.median(per_round):6.3f}  {min(per_round):.2f}-{max(per_round):.2f}"
    )


if __name__ == "__main__":
    main()
