"""Public keys per algorithm, pasted and fetched from an identity provider (SPEC §14).

    .venv/bin/python benchmarks/bench_remote.py [--rounds 40] [--batch 100]

For each algorithm of a public key (RS256 2048-bit, ES256 P-256, EdDSA
Ed25519), one private key signs the ~760-byte chat token of ``bench_common``
twice, with two kids:

* ``pasted-…``: its public key pasted (``Key.objects.add_public_key``) into
  integration ``pasted``;
* ``idp-…``: the same public key in the key set a local JWKS server publishes
  on 127.0.0.1 (``tests.jwks_server.JwksServer``), which integration ``idp``
  takes its keys from (``sources.add_jwks_url``).

µs per token of:

* ``bench_verify``'s minimal hand-written verifier (split, base64url, JSON,
  ``cryptography``'s verify, ``exp``) and PyJWT's ``jwt.decode``, both with the
  same key on the tokens the engine sees for the first time (the baselines);
* ``tokens.verify(token, integration=…, count_use=False)`` on the same token
  again (remembered) and on tokens it has never seen (memory emptied first),
  for each kid.

SPEC §14: a token whose kid is in the fetched set costs what a pasted key
costs, with no query and no fetch. The script counts the database queries
(``CaptureQueriesContext``) and the server's requests over all the timed
rounds, and stops with an error if there was any.

The propagation check (one small query per ``KEY_CACHE_SECONDS`` whatever
the key, measured by ``bench_propagation.py``) is put out of the run's reach
(``KEY_CACHE_SECONDS`` = 3600), so any query counted would be one the key
itself caused. Every case runs in many short rounds, interleaved (pasted and
fetched take turns going first); each figure is the fastest round. Nothing
here is timed in the test suite.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.request_settings"
os.environ["CHAT_BENCH_DB"] = os.path.join(tempfile.mkdtemp(prefix="bench-remote-"), "db")

import django  # noqa: E402

django.setup()

import jwt  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm  # noqa: E402

from benchmarks.bench_common import TokenMaker, machine_line  # noqa: E402
from chat_security import tokens  # noqa: E402
from chat_security.models import Integration, Key  # noqa: E402
from chat_security.remote import sources  # noqa: E402
from tests.jwks_server import JwksServer  # noqa: E402

ALGORITHMS: dict[str, tuple[Callable[[], Any], Any]] = {
    "RS256": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
    "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate, OKPAlgorithm),
}
CASES = (
    "minimal",
    "pyjwt",
    "pasted repeated",
    "fetched repeated",
    "pasted first",
    "fetched first",
)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _signature_checks(alg: str, public: Any, signature: bytes, data: bytes) -> None:
    if alg == "RS256":
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        public.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(signature, data)


def minimal(token: str, alg: str, public: Any) -> dict:
    """``bench_verify``'s minimal verifier: split, base64url, JSON, the signature
    (``cryptography``; ES256's r‖s turned into DER), ``exp``. No strictness at all."""
    h, p, s = token.split(".")
    try:
        _signature_checks(alg, public, _b64(s), f"{h}.{p}".encode())
    except InvalidSignature as exc:
        raise ValueError("bad signature") from exc
    claims = json.loads(_b64(p))
    if claims["exp"] < time.time():
        raise ValueError("expired")
    return claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=100, help="tokens per case per round")
    args = parser.parse_args()
    rounds, batch = max(1, args.rounds), max(1, args.batch)
    print(machine_line())
    call_command("migrate", verbosity=0)
    override_settings(
        CHAT_SECURITY={
            **settings.CHAT_SECURITY,
            "JWKS_PRIVATE_HOSTS": ["127.0.0.1"],
            "KEY_CACHE_SECONDS": 3600,
        }
    ).enable()

    private = {alg: make() for alg, (make, _jwk) in ALGORITHMS.items()}
    Integration.objects.add("pasted", paths=["/pasted/"], actor="bench")
    Integration.objects.add("idp", paths=["/idp/"], actor="bench")
    for alg, key in private.items():
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        Key.objects.add_public_key(pem.decode(), "bench", kid=f"pasted-{alg}", integration="pasted")
    key_set = {"keys": [{**ALGORITHMS[alg][1].to_jwk(key.public_key(), as_dict=True),
                         "kid": f"idp-{alg}", "use": "sig", "alg": alg}
                        for alg, key in private.items()]}  # fmt: skip

    with JwksServer() as server:
        server.set_jwks(key_set)
        sources.add_jwks_url(server.url(), "idp", actor="bench")
        fetches = server.count()
        print(f"JWKS server on 127.0.0.1:{server.port}: {fetches} fetch while adding the source")

        signed = time.perf_counter()
        print("signing the distinct tokens (not timed) ...", flush=True)
        plan = {}
        for alg, key in private.items():
            pasted = TokenMaker(key, alg, f"pasted-{alg}")
            fetched = TokenMaker(key, alg, f"idp-{alg}")
            plan[alg] = (
                (pasted.make(0), [pasted.make(i) for i in range(1, 1 + rounds * batch)]),
                (fetched.make(0), [fetched.make(i) for i in range(1, 1 + rounds * batch)]),
                key.public_key(),
            )
        sizes = ", ".join(f"{a} {len(p[0])}/{len(f[0])} B" for a, (p, f, _k) in plan.items())
        took = time.perf_counter() - signed
        print(f"  {2 * len(plan) * (1 + rounds * batch)} tokens in {took:.1f} s; length {sizes}")

        for alg, (pasted, fetched, _public) in plan.items():  # and the key snapshot is built
            for token, name, expected in (
                (pasted[0], "pasted", ("public_key", f"pasted-{alg}")),
                (fetched[0], "idp", ("remote_key", f"idp-{alg}")),
            ):
                result = tokens.verify(token, integration=name, count_use=False)
                assert (result.key_kind, result.kid) == expected, (result.key_kind, result.kid)
        results = {}
        with CaptureQueriesContext(connection) as queries:
            for alg, (pasted, fetched, public) in plan.items():
                results[alg] = measure(alg, pasted, fetched, public, rounds, batch)
        requests = server.count() - fetches
    for alg, us in results.items():
        report(alg, us, rounds, batch)
    print(f"\nduring the timed rounds: {len(queries)} database queries, {requests} requests "
          "to the JWKS server")  # fmt: skip
    if len(queries) or requests:
        for query in queries.captured_queries[:10]:
            print("  ", query["sql"][:200])
        raise SystemExit("SPEC §14 missed: a verification queried the database or fetched")


def measure(
    alg: str,
    pasted: tuple[str, list[str]],
    fetched: tuple[str, list[str]],
    public: Any,
    rounds: int,
    batch: int,
) -> dict[str, float]:
    """µs per token of each case: the fastest of ``rounds`` interleaved rounds."""
    same = {"pasted": pasted[0], "fetched": fetched[0]}
    fresh = {"pasted": pasted[1], "fetched": fetched[1]}
    integration = {"pasted": "pasted", "fetched": "idp"}
    times: dict[str, list[float]] = {}

    def timed(case: str, run: Callable[[], object]) -> None:
        start = time.perf_counter()
        run()
        times.setdefault(case, []).append((time.perf_counter() - start) / batch * 1e6)

    def repeated(kind: str) -> None:
        token, name = same[kind], integration[kind]
        tokens.verify(token, integration=name, count_use=False)  # remembered before timing
        timed(f"{kind} repeated", lambda: [tokens.verify(token, integration=name, count_use=False)
                                           for _ in range(batch)])  # fmt: skip

    def first(kind: str, firsts: list[str]) -> None:
        name = integration[kind]
        tokens.forget_verified()
        tokens.verify(same[kind], integration=name, count_use=False)  # the store stays warm
        timed(f"{kind} first", lambda: [tokens.verify(t, integration=name, count_use=False)
                                        for t in firsts])  # fmt: skip

    for r in range(rounds):
        order = ("pasted", "fetched") if r % 2 == 0 else ("fetched", "pasted")
        chunk = {kind: fresh[kind][r * batch : (r + 1) * batch] for kind in order}
        timed("minimal", lambda chunk=chunk: [minimal(t, alg, public) for t in chunk["pasted"]])
        timed("pyjwt", lambda chunk=chunk: [jwt.decode(t, public, algorithms=[alg])
                                            for t in chunk["pasted"]])  # fmt: skip
        for kind in order:
            repeated(kind)
        for kind in order:
            first(kind, chunk[kind])
    us = {case: min(times[case]) for case in CASES}
    for when in ("repeated", "first"):
        pairs = zip(times[f"fetched {when}"], times[f"pasted {when}"], strict=True)
        us[f"median ratio {when}"] = statistics.median(f / p for f, p in pairs)
    return us


def report(alg: str, us: dict[str, float], rounds: int, batch: int) -> None:
    print(f"\n{alg}: µs per token (fastest of {rounds} rounds of {batch})")
    for case in CASES:
        print(f"  {case:18s} {us[case]:8.2f}")
    print(
        f"  pasted repeated / PyJWT decode   {us['pasted repeated'] / us['pyjwt']:6.3f}\n"
        f"  pasted first / PyJWT decode      {us['pasted first'] / us['pyjwt']:6.3f}\n"
        f"  pasted first / minimal           {us['pasted first'] / us['minimal']:6.3f}\n"
        f"  fetched / pasted, repeated       {us['fetched repeated'] / us['pasted repeated']:6.3f}"
        f"  (median of the rounds' ratios {us['median ratio repeated']:5.3f})\n"
        f"  fetched / pasted, first          {us['fetched first'] / us['pasted first']:6.3f}"
        f"  (median of the rounds' ratios {us['median ratio first']:5.3f})"
    )


if __name__ == "__main__":
    main()
