"""``slamon run``: a production WSGI server (gunicorn) around the app, with the sync loop
running in the serving process. SIGTERM/SIGINT stop it gracefully: requests in flight
finish, each connector finishes the page in hand and commits, the process exits 0."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from monitor.evaluator import reevaluate_all

log = logging.getLogger("slamon")


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, listen: str) -> None:
        self.app = app
        self.listen = listen
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": self.listen,
            "workers": 1,  # one process owns the sync loop; threads serve requests
            "threads": 8,
            "worker_class": "gthread",
            "graceful_timeout": 30,
            "timeout": 120,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "control_socket_disable": True,  # nothing to control; write nothing to ~/
            "post_worker_init": _start,
            "worker_exit": _stop,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.app


def _start(worker: Any) -> None:
    app = worker.wsgi
    threading.Thread(target=_catch_up, args=(app,), name="re-evaluate", daemon=True).start()


def _catch_up(app: Flask) -> None:
    """Re-evaluate stored tickets under the config just loaded (targets may have changed),
    then start syncing."""
    try:
        reevaluate_all(app)
    except Exception:
        log.exception("re-evaluation at start failed")
    app.extensions["slamon"].scheduler.start()


def _stop(_server: Any, worker: Any) -> None:
    scheduler = worker.wsgi.extensions["slamon"].scheduler
    scheduler.stop()


def serve(app: Flask, listen: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("serving on http://%s/ (metrics at /metrics)", listen)
    Server(app, listen).run()
    sys.exit(0)
