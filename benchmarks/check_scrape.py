"""Does the metrics scrape add up to what ``benchmarks/load.py`` sent and saw?

    python benchmarks/check_scrape.py --url http://127.0.0.1:8000/metrics --save BEFORE
    python benchmarks/check_scrape.py --url http://127.0.0.1:8000/metrics \\
        --before BEFORE --load LOAD_JSON [--integration default]

``METRICS=1 bash benchmarks/run_load.sh`` runs both: the first before the
load (the scrape as it is, saved), the second after it. The second compares
how much ``chat_security_verifications_total`` grew, by integration, outcome
and code, with the answers ``load.py --json-out`` recorded: a 200 is one
``accepted``, a 401 with ``"error": CODE`` one ``rejected`` with that code,
all under ``--integration``. Any other series that moved is a difference
too. Prints the comparison and ``scrape adds up: yes`` or ``no``; exit
status 1 for no. Needs prometheus_client (the ``metrics`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

VERIFICATIONS = "chat_security_verifications_total"
Series = tuple[str, str, str]  # (integration, outcome, code)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # loopback, the run's own server
        return response.read().decode()


def verifications(text: str) -> Counter[Series]:
    counted: Counter[Series] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == VERIFICATIONS:
                labels = sample.labels
                counted[labels["integration"], labels["outcome"], labels["code"]] += sample.value
    return counted


def expected(load: dict, integration: str) -> tuple[Counter[Series], list[dict]]:
    """The series load.py's answers count under, and the answers no series counts."""
    series: Counter[Series] = Counter()
    uncounted = []
    for answer in load["answers"]:
        status, code = answer["status"], answer["code"]
        if status == 200 and code is None:
            series[integration, "accepted", ""] += answer["count"]
        elif status == 401 and code and not code.startswith("<"):
            series[integration, "rejected", code] += answer["count"]
        else:  # a 503 (not a verification) or a wrong answer: load.py has failed already
            uncounted.append(answer)
    return series, uncounted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the site's /metrics")
    parser.add_argument("--save", type=Path, help="write the scrape to this file and stop")
    parser.add_argument("--before", type=Path, help="the scrape saved before the load")
    parser.add_argument("--load", type=Path, help="load.py's --json-out file")
    parser.add_argument("--integration", default="default", help="the load's integration")
    args = parser.parse_args()
    text = fetch(args.url)
    if args.save:
        args.save.write_text(text, encoding="utf-8")
        return 0
    if not (args.before and args.load):
        parser.error("give --save FILE, or --before FILE and --load FILE")

    grown = verifications(text)
    grown.subtract(verifications(args.before.read_text(encoding="utf-8")))
    grown = Counter({series: n for series, n in grown.items() if n})
    load = json.loads(args.load.read_text(encoding="utf-8"))
    want, uncounted = expected(load, args.integration)

    print(f"{VERIFICATIONS}, grown during the load vs load.py's answers:")
    print(f"  {'integration':<12} {'outcome':<9} {'code':<18} {'scrape':>8} {'load.py':>8}")
    for series in sorted(set(grown) | set(want)):
        integration, outcome, code = series
        mark = "" if grown[series] == want[series] else "   <- differs"
        print(
            f"  {integration:<12} {outcome:<9} {code or '-':<18} "
            f"{grown[series]:>8,.0f} {want[series]:>8,}{mark}"
        )
    sent = ", ".join(f"{kind} {n:,}" for kind, n in load["sent"].items())
    print(f"  load.py sent (answered): {sent}; total {load['answered']:,}")
    for answer in uncounted:
        print(
            f"  not a verification: {answer['count']} × {answer['kind']} answered "
            f"{answer['status']} {answer['code']}"
        )
    errors = sum(load["errors"].values())
    if errors:
        print(f"  {errors} requests got no answer: the server may have counted them")
    adds_up = grown == want
    print(
        f"scrape adds up: {'yes' if adds_up else 'no'} "
        f"({sum(grown.values()):,.0f} counted, {sum(want.values()):,} answered)"
    )
    return 0 if adds_up else 1


if __name__ == "__main__":
    sys.exit(main())
