"""gunicorn configuration for the multi-process metrics test: the hook
docs/observability.md tells a site to put in its gunicorn.conf.py."""

from prometheus_client import multiprocess


def child_exit(server, worker):
    # A worker that exits stops counting towards the live gauges (open sockets).
    multiprocess.mark_process_dead(worker.pid)
