"""Helpers of ``run_served.sh``: prepare the database and tokens, wait for a server,
check and tabulate wrk's output. Run with the served venv's Python:

    bench.py prepare --work DIR --rounds R --per-round N --warm N
    bench.py wait URL --token-file F --pid PID --expect verified|user
    bench.py check WRK_OUTPUT            # exit 1 on non-2xx, socket errors, repeated tokens
    bench.py report --work DIR --rounds R
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the checkout: benchmarks.bench_common
sys.path.insert(0, str(HERE.parent))  # served.settings

#: name, stack, path, token: the order of the table.
VARIANTS = [
    ("unguarded", "plain", "/chat/api/whoami", "chat.token"),
    ("guarded, repeated", "chat", "/chat/api/whoami", "chat.token"),
    ("guarded, fresh", "chat", "/chat/api/whoami", "fresh"),
    ("simplejwt stateless", "drf", "/drf/stateless", "simplejwt.token"),
    ("simplejwt DB user", "drf", "/drf/db-user", "simplejwt.token"),
]
TARGETS = {"guarded, repeated": 0.95, "guarded, fresh": 0.85}


def prepare(work: Path, rounds: int, per_round: int, warm: int) -> None:
    """Database, keys, a user, and the tokens every variant sends."""
    os.environ["SERVED_WORK"] = str(work)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "served.settings")
    key_file = work / "simplejwt.key"
    key_file.write_text(secrets.token_urlsafe(48))
    key_file.chmod(0o600)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from benchmarks.bench_common import TokenMaker, machine_line

    print(machine_line())
    call_command("migrate", verbosity=0, interactive=False)
    call_command("chat_security", "security", "on", stdout=io.StringIO())
    out = io.StringIO()
    call_command("chat_security", "generate-secret", stdout=out)
    created = json.loads(out.getvalue())
    user = get_user_model().objects.create_user("alice", "alice.example@example.com")

    chat = TokenMaker(created["secret"], "HS256", created["kid"])
    simplejwt = TokenMaker(
        settings.SIMPLE_JWT["SIGNING_KEY"],
        "HS256",
        identity={"token_type": "access", "user_id": str(user.pk)},
    )
    (work / "chat.token").write_text(chat.make(0))
    (work / "simplejwt.token").write_text(simplejwt.make(0))
    start = time.perf_counter()
    serial = 1
    files = [("fresh-warm.txt", warm)]
    files += [(f"fresh-{r}.txt", per_round) for r in range(1, rounds + 1)]
    for name, count in files:
        now = int(time.time())
        with open(work / name, "w", encoding="ascii") as out_file:
            for _ in range(count):
                out_file.write(chat.make(serial, now) + "\n")
                serial += 1
    print(
        f"token length: chat_security {len(chat.make(0))} B, simplejwt {len(simplejwt.make(0))} B;"
        f" {warm + rounds * per_round} fresh tokens signed in {time.perf_counter() - start:.1f} s"
    )


def wait(url: str, token_file: Path, pid: int, expect: str, timeout: float = 30.0) -> None:
    """Until the endpoint answers 200 with the expected JSON (at most ``timeout`` s)."""
    match = re.fullmatch(r"http://([\d.]+):(\d+)(/.*)", url)
    if not match:
        sys.exit(f"not a http://IP:PORT/path URL: {url}")
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    token = token_file.read_text().splitlines()[0].strip()
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"gunicorn {pid} exited before {url} answered")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
        except OSError as exc:
            last = str(exc)
            time.sleep(0.2)
            continue
        if response.status != 200:
            sys.exit(f"{url}: HTTP {response.status} {body[:300]!r}")
        answer = json.loads(body)
        if expect == "verified" and answer.get("verified") is not True:
            sys.exit(f"{url}: the token was not verified: {answer}")
        if expect == "user" and not answer.get("user_id"):
            sys.exit(f"{url}: no user: {answer}")
        return
    sys.exit(f"{url} did not answer within {timeout:.0f} s ({last})")


# -- wrk's output ---------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse(text: str) -> dict[str, float]:
    """req/s, p50 and p99 (ms), non-2xx count, socket errors, repeated fresh tokens."""
    result: dict[str, float] = {"non2xx": 0, "socket_errors": 0, "repeated": 0}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rate is None:
        raise ValueError("no Requests/sec line in wrk's output")
    result["rps"] = float(rate.group(1))
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {pct}% latency line (was wrk run with --latency?)")
        result[f"p{pct}"] = _ms(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        result["non2xx"] = int(non2xx.group(1))
    socket_errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    errors = re.search(socket_errors, text)
    if errors:
        result["socket_errors"] = sum(int(n) for n in errors.groups())
    repeated = re.search(r"fresh tokens: sent (\d+), repeated (\d+)", text)
    if repeated:
        result["repeated"] = int(repeated.group(2))
    return result


def check(path: Path) -> None:
    text = path.read_text()
    try:
        result = parse(text)
    except ValueError as exc:
        sys.exit(f"{path.name}: {exc}\n{text}")
    problems = [
        f"{int(result[key])} {what}"
        for key, what in (
            ("non2xx", "non-2xx responses"),
            ("socket_errors", "socket errors"),
            ("repeated", "fresh tokens sent twice (make more with --per-round)"),
        )
        if result[key]
    ]
    if problems:
        sys.exit(f"FAILED {path.name}: {', '.join(problems)}\n{text}")


def load(path: Path) -> dict[str, float]:
    return parse(path.read_text())


def report(work: Path, rounds: int) -> None:
    """The table. Ratios are medians of per-round ratios between runs made side by side:
    a variant against its paired unguarded run; two variants through their pairs."""
    base = VARIANTS[0][0]
    runs: dict[str, list[dict[str, float]]] = {}
    paired: dict[str, list[float]] = {}  # variant -> per-round req/s ratio to its pair
    for index, (name, *_rest) in enumerate(VARIANTS[1:], start=1):
        runs[name] = [
            parse((work / f"wrk-{index}-{r}.txt").read_text()) for r in range(1, rounds + 1)
        ]
        pairs = [parse((work / f"wrk-0-{r}-{index}.txt").read_text()) for r in range(1, rounds + 1)]
        runs.setdefault(base, []).extend(pairs)
        paired[name] = [x["rps"] / y["rps"] for x, y in zip(runs[name], pairs, strict=True)]

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    print(
        f"\nmedians over {rounds} rounds; each variant's runs paired with unguarded runs "
        f"({len(runs[base])} in all)\n"
    )
    print(
        f"{'variant':22s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'vs unguarded':>12s} {'target':>7s}        per round: req/s (paired ratio)"
    )
    print(
        f"{base:22s} {med(base, 'rps'):8.1f} {med(base, 'p50'):8.2f} {med(base, 'p99'):8.2f} "
        f"{1:12.3f}"
    )
    for name, *_rest in VARIANTS[1:]:
        ratio = statistics.median(paired[name])
        target = TARGETS.get(name)
        verdict = ("ok" if ratio >= target else "UNDER") if target else ""
        target_text = f">={target:.2f}" if target else ""
        per_round = " ".join(
            f"{run['rps']:.0f} ({r:.2f})" for run, r in zip(runs[name], paired[name], strict=True)
        )
        print(
            f"{name:22s} {med(name, 'rps'):8.1f} {med(name, 'p50'):8.2f} {med(name, 'p99'):8.2f} "
            f"{ratio:12.3f} {target_text:>7s} {verdict:5s}  {per_round}"
        )
    print()
    for other, target in (("simplejwt DB user", 2.0), ("simplejwt stateless", 1.5)):
        ratio = statistics.median(
            g / o for g, o in zip(paired["guarded, repeated"], paired[other], strict=True)
        )
        verdict = "ok" if ratio >= target else "UNDER"
        print(f"guarded, repeated / {other:20s} {ratio:6.3f}  (target >= {target:.1f})  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--per-round", type=int, required=True)
    p.add_argument("--warm", type=int, required=True)
    w = sub.add_parser("wait")
    w.add_argument("url")
    w.add_argument("--token-file", type=Path, required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--expect", choices=["verified", "user", "any"], default="any")
    c = sub.add_parser("check")
    c.add_argument("output", type=Path)
    r = sub.add_parser("report")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.work, args.rounds, args.per_round, args.warm)
    elif args.command == "wait":
        wait(args.url, args.token_file, args.pid, args.expect)
    elif args.command == "check":
        check(args.output)
    else:
        report(args.work, args.rounds)


if __name__ == "__main__":
    main()
