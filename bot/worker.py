"""The background worker: everything that must happen when no patient is texting.

Every WORKER_TICK_SECONDS one ``tick(app, now)``:

1. on a Redis Cluster, moves the records left in patients' outboxes to the records stream
   (``Store.relay_outboxes``: a message whose own move did not happen); then sweeps
   checklists left open past ABANDON_AFTER_MINUTES into 'abandoned' records;
2. consumes new triage records (consumer group ``pagers`` on ``triage:records``, taking over
   entries a crashed worker left behind): starts pages (EMERGENCY, URGENT, incomplete triage),
   acknowledgement deadlines, SOON follow-ups, and links follow-up answers to their record;
3. re-pages escalations not acknowledged by their deadline (overdue);
4. sends pages that are due (first attempts and retries with backoff);
5. escalates EMERGENCY pages not delivered or not acknowledged in time to voice calls, down
   the rota (``voice.py``);
6. sends follow-ups that are due.

Pages and follow-ups carry a StatusCallback (``notify.Receipts``); Twilio's signed callbacks
are handled by the web app (``twilio_callbacks.py``), which only records what they say.

Everything that depends on time takes ``now`` (tests use a fake clock); all state is in Redis,
so several workers may run and a restarted one resumes. Run it with ``python -m bot.worker``
(docker-compose does), or inside ``flask --app wsgi serve``.

After every completed tick the worker sets ``worker:heartbeat`` to the unix time (seconds).
``python -m bot.worker --check`` (docker-compose's healthcheck) exits 0 when that time is
recent, 1 otherwise; it starts nothing and needs only REDIS_URL (or the local instance/).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from flask import Flask

from . import indexes, keys, notify, retention
from .followup import FollowUps
from .paging import BATCH, MERGED, RAISED, Pager, PagingSettings, consume
from .voice import VoiceLadder, VoiceSettings

log = logging.getLogger(__name__)
MAX_ROUNDS = 50  # batches of one job per tick
HEARTBEAT = "worker:heartbeat"  # unix time of the last completed tick, any worker
SILENT_AFTER = 60.0  # /healthz and the dashboard banner: a worker silent longer than this
# A record a crashed worker read but never routed is taken over after this long; with the
# EMERGENCY page lease (paging.EMERGENCY_LEASE_SECONDS) a crash delays an EMERGENCY page by
# at most about this plus one tick.
CLAIM_IDLE_MS = 15_000


@dataclass
class Runtime:
    pager: Pager
    follow_ups: FollowUps
    voice: VoiceLadder
    consumer: str
    claim_idle_ms: int


def runtime(app: Flask) -> Runtime:
    """The worker's parts for this app, built once (the SMS backend is chosen here)."""
    rt = app.extensions.get("worker")
    if rt is None:
        service = app.extensions["triage"]
        backend = notify.backend_for(app)
        settings = PagingSettings.from_config(app.config)
        voice = VoiceSettings.from_config(app.config)
        outbox = notify.Outbox(backend, notify.Receipts(service.store.r, settings.base_url,
                                                        app.config["SECRET_KEY"]))
        rt = Runtime(
            pager=Pager(service.store, outbox, settings),
            follow_ups=FollowUps(service, outbox,
                                 after_seconds=app.config["FOLLOW_UP_AFTER_MINUTES"] * 60,
                                 max_attempts=settings.max_attempts,
                                 retry_base=settings.retry_base),
            voice=VoiceLadder(service.store, outbox, voice),
            consumer=app.config.get("WORKER_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            claim_idle_ms=CLAIM_IDLE_MS,
        )
        app.extensions["worker"] = rt
        if not settings.on_call:
            log.warning("ON_CALL_NUMBERS is empty: EMERGENCY and URGENT outcomes will NOT be "
                        "paged (they are marked not_paged on the dashboard)")
        if not voice.rota:
            log.warning("no ON_CALL_ROTA or ON_CALL_NUMBERS: an EMERGENCY page nobody sees "
                        "cannot be escalated to a phone call")
        if not settings.base_url:
            log.warning("PUBLIC_BASE_URL is unset: no delivery receipts (every EMERGENCY page "
                        "counts as undelivered and is followed by a call) and calls cannot be "
                        "acknowledged by pressing 1")
    return rt


def route(rt: Runtime, rid: str, rec: dict[str, Any], now: float) -> None:
    """What one new triage record starts."""
    origin = rt.follow_ups.note_answer(rid, rec, now)
    kind = rt.pager.on_record(rid, rec, now)
    if kind == RAISED:  # the conversation's open escalation now has this record's tier
        holder = rt.pager.r.hget(rt.pager.k.esc_key(rid), "merged_into")
        if holder:
            rt.voice.on_record(holder, rec, now)
    elif kind != MERGED:  # a merged record rides on the escalation already paged (and called)
        rt.voice.on_record(rid, rec, now)
    if origin and kind is None and rec.get("kind") == "abandoned":
        # No complete reply to a re-check after a worrying answer: rule 5, alert the team.
        rt.pager.start_page(origin, "no_follow_up_reply", now,
                            note=f"no complete reply to the follow-up re-check ({rid})")
    rt.follow_ups.schedule(rid, rec, now)


def _drain(job: Callable[[], int], rounds: int = MAX_ROUNDS) -> int:
    """Run a batch job again while it fills whole batches (a burst of records is paged in
    one tick, not one batch every tick), at most ``rounds`` times."""
    total = 0
    for _ in range(rounds):
        done = job()
        total += done
        if done < BATCH:
            break
    return total


def tick(app: Flask, now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    rt = runtime(app)
    service = app.extensions["triage"]
    replayed = service.replay_spool()  # texts received during an outage, first
    # On a Redis Cluster, first the outboxes: records that a message committed but did not
    # move (its own move failed or its process died). Then everything as on one server: the
    # pager's and the care team's keys all carry the tag {triage} there (keys.Layout), so
    # their transactions are in one slot.
    relayed = service.store.relay_outboxes() if service.store.cluster else None
    abandoned = service.sweep_abandoned(now)
    consumed = _drain(lambda: consume(service.store.r, rt.consumer,
                                      lambda rid, rec: route(rt, rid, rec, now),
                                      count=BATCH, claim_idle_ms=rt.claim_idle_ms))
    overdue = _drain(lambda: rt.pager.repage_overdue(now))
    paged = _drain(lambda: rt.pager.send_due(now))
    calls = rt.voice.run_due(now)
    followed = _drain(lambda: rt.follow_ups.send_due(now))
    indexes.catch_up(service.store.r, now, indexes.retention_days(app.config))  # care reads
    retention.run(service.store.r, now, int(app.config.get("RECORD_RETENTION_DAYS") or 0),
                  app.config.get("EXPORT_DIR") or Path(app.instance_path) / "exports")
    done = {"replayed": replayed, "abandoned": len(abandoned), "records": consumed,
            "overdue": overdue, "pages": paged, "calls": calls, "follow_ups": followed}
    if relayed is not None:
        done["relayed"] = relayed
    return done


def run_forever(app: Flask, stop: threading.Event | None = None,
                ready: threading.Event | None = None) -> None:
    """Tick every WORKER_TICK_SECONDS until ``stop``. ``ready`` is set once the first tick has
    been tried (``serve`` waits for it, so that /healthz does not call a worker that has
    not had its first turn yet silent)."""
    stop = stop or threading.Event()
    every = max(1, int(app.config.get("WORKER_TICK_SECONDS", 15)))
    runtime(app)
    log.info("worker started (every %ss)", every)
    while not stop.is_set():
        try:
            done = tick(app)
            app.extensions["triage"].store.r.set(HEARTBEAT, f"{time.time():.0f}")
            if any(done.values()):
                log.info("worker: %s", done)
        except Exception:  # keep the worker alive; the next tick tries again
            log.exception("worker tick failed")
        if ready is not None:
            ready.set()
        stop.wait(every)
    log.info("worker stopped")


def health(r: redis.Redis, now: float | None = None) -> dict[str, Any]:
    """For /healthz and the dashboard: the worker's last tick and the dead-letter list."""
    now = time.time() if now is None else now
    raw = r.get(HEARTBEAT)
    age = None if raw is None else max(0.0, now - float(raw))
    return {"worker_last_tick_seconds_ago": None if age is None else round(age),
            "worker_silent": age is None or age > SILENT_AFTER,
            "dead_letters": int(r.llen(keys.of(r).DEAD_LETTERS))}


def banner_text(r: redis.Redis, now: float | None = None) -> str:
    """One sentence for the dashboard banner when the worker or the records need a person."""
    return banner(r, now)[0]


def banner(r: redis.Redis, now: float | None = None) -> tuple[str, int]:
    """``banner_text`` and the number of dead letters (the banner links to them)."""
    try:
        h = health(r, now)
    except (redis.RedisError, OSError):
        return "Redis does not answer: texts are answered but records may be delayed.", 0
    parts = []
    if h["worker_silent"]:
        ago = h["worker_last_tick_seconds_ago"]
        parts.append("The worker has not run " + ("yet" if ago is None else
                                                  f"for {ago // 60} min {ago % 60} s")
                     + ": pages, re-pages and follow-ups are NOT being sent.")
    if h["dead_letters"]:
        parts.append(f"{h['dead_letters']} unreadable record(s) set aside (dead letters): "
                     "check them with the service's operator.")
    return " ".join(parts), int(h["dead_letters"])


def check(max_age: float | None = None, now: float | None = None) -> tuple[bool, str]:
    """Is a worker ticking? Reads ``worker:heartbeat`` only (no app, no embedded Redis
    started). Too old: more than 4 ticks, and at least 60 s, ago."""
    from pathlib import Path

    from . import config

    settings = config.from_environment()
    url = settings["REDIS_URL"] or f"unix://{Path(settings['INSTANCE_PATH']) / 'redis.sock'}"
    limit = max_age or max(60, 4 * settings["WORKER_TICK_SECONDS"])
    try:
        kind = redis.RedisCluster if settings.get("REDIS_CLUSTER") else redis.Redis
        raw = kind.from_url(url, socket_timeout=3, socket_connect_timeout=3).get(HEARTBEAT)
    except (redis.RedisError, OSError) as exc:
        return False, f"worker check: Redis does not answer ({exc.__class__.__name__})"
    if raw is None:
        return False, f"worker check: no heartbeat yet ({HEARTBEAT} is not set)"
    age = (time.time() if now is None else now) - float(raw)
    if age > limit:
        return False, f"worker check: last tick {age:.0f} s ago (more than {limit:.0f} s)"
    return True, f"worker check: last tick {age:.0f} s ago"


def main() -> None:
    if "--check" in sys.argv[1:]:
        ok, message = check()
        print(message)
        sys.exit(0 if ok else 1)
    from . import create_app

    app = create_app()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_forever(app, stop)


if __name__ == "__main__":
    main()
