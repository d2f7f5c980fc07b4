"""gunicorn configuration for prometheus_client's multi-process mode: the hook
docs/observability.md tells a site to put in its gunicorn.conf.py.

Used with ``-c`` by ``METRICS=1 bash benchmarks/run_load.sh`` and by
tests/test_metrics_workers.py; the server's environment sets
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory).
"""

from prometheus_client import multiprocess


def child_exit(server, worker):
    # A worker that exits stops counting towards the live gauges (open sockets).
    multiprocess.mark_process_dead(worker.pid)
