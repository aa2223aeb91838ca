"""The background worker: jobs that must run when no patient is texting.

Now: turns checklists left open past ABANDON_AFTER_MINUTES into 'abandoned' records.
Run it with ``python -m bot.worker`` (docker-compose does), or inside ``flask serve``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from flask import Flask

log = logging.getLogger(__name__)
TICK_SECONDS = 15


def tick(app: Flask, now: float | None = None) -> dict[str, int]:
    service = app.extensions["triage"]
    abandoned = service.sweep_abandoned(now)
    return {"abandoned": len(abandoned)}


def run_forever(app: Flask, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    log.info("worker started (every %ss)", TICK_SECONDS)
    while not stop.is_set():
        try:
            done = tick(app)
            if any(done.values()):
                log.info("worker: %s", done)
        except Exception:  # keep the worker alive; the next tick tries again
            log.exception("worker tick failed")
        stop.wait(TICK_SECONDS)


def main() -> None:
    from . import create_app

    app = create_app()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_forever(app, stop)
    time.sleep(0)


if __name__ == "__main__":
    main()
