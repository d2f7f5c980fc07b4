"""What Prometheus metrics add to counting one request (``usage.count_request``).

    .venv/bin/python benchmarks/bench_metrics.py [--n 20000] [--rounds 40] [--multiprocess]

``count_request`` is the one place every protected request (HTTP and
WebSocket) is counted, and where ``chat_security.metrics`` hooks in. Each
round times ``--n`` calls with metrics off (the hook is ``None``), then the
same calls with metrics on (the hook counts into prometheus_client); the
report gives each side's fastest round in ns/call, their difference (what
metrics add per request) and the median of the per-round differences.
``--multiprocess`` runs prometheus_client in multi-process mode (values in
memory-mapped files under a temporary ``PROMETHEUS_MULTIPROC_DIR``), as under
gunicorn. ``bench_request.py --metrics`` measures the same on whole requests,
where the difference drowns in the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.bench_common import machine_line, temporary_site  # noqa: E402

_TMP = temporary_site("bench-metrics-")
if "--multiprocess" in sys.argv:  # read when prometheus_client is first imported
    os.makedirs(os.path.join(_TMP, "prometheus"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(_TMP, "prometheus")

import django  # noqa: E402

django.setup()

from chat_security import metrics, usage  # noqa: E402


def timed(n: int) -> float:
    """ns per ``count_request`` call, over ``n`` calls of a verified request's counting."""
    count, now = usage.count_request, time.time()
    start = time.perf_counter()
    for _ in range(n):
        count("signed", "hs-0123456789ab", now, "default")
    return (time.perf_counter() - start) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="calls per side per round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--multiprocess", action="store_true", help="multi-process mode")
    args = parser.parse_args()
    print(machine_line())
    mode = "multi-process (mmap files)" if args.multiprocess else "single process"
    print(f"prometheus_client: {mode}")
    usage.flush_due = lambda margin=0.0: False  # type: ignore[assignment]  # no write timed
    usage._State.flush_at = float("inf")
    off: list[float] = []
    on: list[float] = []
    for _ in range(max(1, args.rounds)):
        metrics.disable()
        off.append(timed(args.n))
        assert metrics.enable()
        on.append(timed(args.n))
    metrics.disable()
    added = [b - a for a, b in zip(off, on, strict=True)]
    print(f"\n{args.rounds} rounds of {args.n} calls per side; fastest round, ns/call:")
    print(f"  metrics off  {min(off):7.0f}")
    print(f"  metrics on   {min(on):7.0f}   (+{min(on) - min(off):.0f} ns per counted request)")
    print(f"  median of the rounds' differences: +{statistics.median(added):.0f} ns")


if __name__ == "__main__":
    main()
