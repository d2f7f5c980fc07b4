"""The metrics scrape of four gunicorn workers adds up (SPEC §15, issue 20).

gunicorn runs in prometheus_client's multi-process mode as
docs/observability.md sets it up: ``PROMETHEUS_MULTIPROC_DIR`` in the
environment, the ``child_exit`` hook of benchmarks/gunicorn_metrics.py, and
``/metrics`` mounted (tests/metrics_urls.py). Eight clients send requests of
known outcomes to two integrations at once, spread over the workers by the
kernel; halfway through one worker is stopped and gunicorn starts another.
The scrape, answered by whichever worker, must count every request exactly:
the stopped worker's counts included.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .servers import ROOT, manage, serving
from .test_workers import WORKERS
from .test_workers import env as worker_env

__all__ = ["worker_env"]

#: requests per kind of outcome, in each half
EACH = 40


@pytest.fixture
def env(worker_env):
    """tests/test_workers.py's database and cache, with metrics on (same tables)."""
    return {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.metrics_settings"}


def get(base: str, path: str, token: str | None) -> tuple[int, int | None, str | None]:
    """(status, worker pid when the view names it, error code) on a new connection."""
    request = urllib.request.Request(base + path, headers={"Connection": "close"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read()).get("pid"), None
    except urllib.error.HTTPError as exc:
        return exc.code, None, json.loads(exc.read() or b"{}").get("error")


def scrape(base: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:  # noqa: S310
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def test_the_scrape_of_four_workers_adds_up(env, tmp_path):
    in_grace = json.loads(manage(env, "chat_security", "generate-secret"))["kid"]
    token = manage(env, "chat_security", "issue", "--sub", "alice").strip()
    manage(env, "chat_security", "rotate-secret", "--grace", "1")  # token's key: an hour's grace
    manage(env, "chat_security", "integration", "add", "brand-b", "--path", "/a/api/")
    manage(env, "chat_security", "security", "off", "--integration", "brand-b")
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()  # empty at start, as the deployment recipe says
    server_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    gunicorn = ("-m", "gunicorn", "-c", str(ROOT / "benchmarks" / "gunicorn_metrics.py"),
                "demo_site.wsgi:application", "--workers", str(WORKERS),
                "--bind", "127.0.0.1:{port}", "--log-level", "warning")  # fmt: skip
    # (path, token, the answer expected, the series it counts under)
    chat, anyone = "/chat/api/worker", "/a/api/tenant"
    kinds = [
        (chat, token, (200, None), ("default", "accepted", "")),
        (chat, None, (401, "missing_token"), ("default", "rejected", "missing_token")),
        (chat, "garbage", (401, "malformed"), ("default", "rejected", "malformed")),
        (chat, token[:-4] + "AAAA", (401, "invalid_signature"),
         ("default", "rejected", "invalid_signature")),
        (anyone, None, (200, None), ("brand-b", "anonymous", "")),
    ]  # fmt: skip
    sent: Counter[tuple[str, str, str]] = Counter()
    pids: Counter[int] = Counter()

    def send(kind: tuple) -> None:
        path, sent_token, expected, series = kind
        status, pid, code = get(base, path, sent_token)
        assert (status, code) == expected, (path, status, code)
        if pid is not None:
            pids[pid] += 1
        sent[series] += 1  # counted once answered: a request the server saw

    with serving(server_env, *gunicorn) as port:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while len(pids) < WORKERS and time.monotonic() < deadline:  # every worker up
            send(kinds[0])
        assert len(pids) == WORKERS, pids
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, kinds * EACH))
        stopped = max(pids, key=pids.__getitem__)  # it has counted something
        os.kill(stopped, signal.SIGTERM)  # gunicorn starts another in its place
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, kinds * EACH))
        text, samples = scrape(base)

    counted = {}
    for (name, pairs), value in samples.items():
        if name == "chat_security_verifications_total":
            labels = dict(pairs)
            counted[labels["integration"], labels["outcome"], labels["code"]] = value
    print(f"{sum(sent.values())} requests, /chat/api/worker by pid {dict(pids)}; scrape:")
    print("\n".join(line for line in text.splitlines() if "chat_security_" in line))
    assert counted == dict(sent)
    grace = samples["chat_security_key_grace_remaining_seconds",
                    (("integration", "default"), ("kid", in_grace))]  # fmt: skip
    assert 3000 < grace <= 3600
    # The stopped worker's counts are in its own file, kept after it exited: the
    # scrape added up the files of every worker that counted.
    files = {p.name for p in multiproc.iterdir()}
    assert f"counter_{stopped}.db" in files, files
    assert len({f for f in files if f.startswith("counter_")}) >= WORKERS, files
