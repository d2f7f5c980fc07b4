"""The engine's cost per token against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_verify.py [--rounds 30] [--batch 200]

Tokens are the ~760-byte chat token of ``bench_common`` (``userData``,
``agentData``), HS256 with ``kid`` and RS256 (2048-bit) with and without
``kid``. For each algorithm, µs per token of:

* a minimal hand-written verifier: split, base64url, JSON, the signature
  (``hmac.digest`` + ``compare_digest``; ``cryptography``'s RSA verify), ``exp``;
* PyJWT's ``jwt.decode`` (signature, exp/nbf/iat);
* the engine on a token it has verified before (the chat hot path: every
  message re-sends the same token);
* the engine on tokens it has never seen (memory emptied first), and the
  minimal verifier on the same distinct tokens.

Every case runs in many short rounds, interleaved; each figure is the fastest
round (other work on a shared machine only ever slows a round down). Targets
(issue 12): repeated ≤ 0.1× PyJWT ``decode``; first-seen ≤ 1.5× the minimal
verifier. Nothing here is timed in the test suite.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.request_settings"
os.environ["CHAT_BENCH_DB"] = os.path.join(tempfile.mkdtemp(prefix="bench-verify-"), "db")

import django  # noqa: E402

django.setup()

import jwt  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from django.core.management import call_command  # noqa: E402

from benchmarks.bench_common import TokenMaker, machine_line  # noqa: E402
from chat_security import tokens  # noqa: E402
from chat_security.models import Key  # noqa: E402


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def minimal_hs256(token: str, secret: bytes) -> dict:
    h, p, s = token.split(".")
    mac = hmac.digest(secret, f"{h}.{p}".encode(), hashlib.sha256)
    if not hmac.compare_digest(mac, _b64(s)):
        raise ValueError("bad signature")
    claims = json.loads(_b64(p))
    if claims["exp"] < time.time():
        raise ValueError("expired")
    return claims


def minimal_rs256(token: str, public_key: rsa.RSAPublicKey) -> dict:
    h, p, s = token.split(".")
    try:
        public_key.verify(_b64(s), f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise ValueError("bad signature") from exc
    claims = json.loads(_b64(p))
    if claims["exp"] < time.time():
        raise ValueError("expired")
    return claims


def fastest(times: list[float]) -> float:
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=200, help="tokens per case per round")
    args = parser.parse_args()
    rounds, batch = max(1, args.rounds), max(1, args.batch)
    print(machine_line())
    call_command("migrate", verbosity=0)
    secret_key, secret = Key.objects.generate_secret("bench")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    public_key = Key.objects.add_public_key(pem, "bench")

    makers = {
        "HS256": (TokenMaker(secret, "HS256", secret_key.kid), secret.encode()),
        "RS256, kid": (TokenMaker(private, "RS256", public_key.kid), public),
        "RS256, no kid": (TokenMaker(private, "RS256", None), public),
    }
    signed = time.perf_counter()
    print("signing the distinct tokens (not timed) ...", flush=True)
    plan = {}
    for name, (maker, key) in makers.items():
        same = maker.make(0)
        fresh = [maker.make(i) for i in range(1, 1 + 2 * rounds * batch)]
        plan[name] = (same, fresh, key)
    print(f"  {sum(len(f) for _s, f, _k in plan.values())} tokens in "
          f"{time.perf_counter() - signed:.1f} s; token length "
          + ", ".join(f"{n} {len(s)} B" for n, (s, _f, _k) in plan.items()))  # fmt: skip

    for name, (same, fresh, key) in plan.items():
        pyjwt_key = secret if name == "HS256" else public
        report(name, measure(name, same, fresh, key, pyjwt_key, rounds, batch), rounds, batch)


def measure(
    name: str, same: str, fresh: list[str], key: object, pyjwt_key: object, rounds: int, batch: int
) -> dict[str, float]:
    """µs per token of each case: the fastest of ``rounds`` interleaved rounds."""
    minimal: Callable[[str, object], dict] = minimal_hs256 if name == "HS256" else minimal_rs256
    algorithm = "HS256" if name == "HS256" else "RS256"
    tokens.verify(same, count_use=False)
    times: dict[str, list[float]] = {}

    def timed(case: str, run: Callable[[], object]) -> None:
        start = time.perf_counter()
        run()
        times.setdefault(case, []).append((time.perf_counter() - start) / batch * 1e6)

    for r in range(rounds):
        firsts = fresh[2 * r * batch : (2 * r + 1) * batch]
        seconds = fresh[(2 * r + 1) * batch : (2 * r + 2) * batch]
        timed("minimal", lambda: [minimal(same, key) for _ in range(batch)])
        timed("pyjwt", lambda: [jwt.decode(same, pyjwt_key, algorithms=[algorithm])
                                for _ in range(batch)])  # fmt: skip
        timed("engine repeated", lambda: [tokens.verify(same, count_use=False)
                                          for _ in range(batch)])  # fmt: skip
        timed("minimal fresh", lambda firsts=firsts: [minimal(t, key) for t in firsts])
        tokens.forget_verified()
        tokens.verify(same, count_use=False)  # the store stays warm
        timed("engine fresh", lambda seconds=seconds: [tokens.verify(t, count_use=False)
                                                       for t in seconds])  # fmt: skip
    return {case: fastest(t) for case, t in times.items()}


def report(name: str, us: dict[str, float], rounds: int, batch: int) -> None:
    print(f"\n{name}: µs per token (fastest of {rounds} rounds of {batch})")
    for case, value in us.items():
        print(f"  {case:18s} {value:8.2f}")
    repeated = us["engine repeated"] / us["pyjwt"]
    cold = us["engine fresh"] / us["minimal fresh"]
    print(
        f"  engine repeated / PyJWT decode   {repeated:5.3f}  (target <= 0.10: "
        f"{'met' if repeated <= 0.10 else 'missed'})\n"
        f"  engine fresh / minimal fresh     {cold:5.2f}  (target <= 1.50: "
        f"{'met' if cold <= 1.5 else 'missed'})\n"
        f"  PyJWT decode / minimal           {us['pyjwt'] / us['minimal']:5.2f}"
    )


if __name__ == "__main__":
    main()
