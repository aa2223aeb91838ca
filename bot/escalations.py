"""What happens to a triage record after it is written: status, who did what, and when.

A record (``triage:records`` stream, see ``store.py``) is immutable. Everything that changes
lives beside it:

* ``triage:status``                hash  record id -> open | acknowledged | resolved
* ``triage:esc:<id>``              hash  acknowledged_by/_at, resolved_by/_at/_note,
                                         page_status (pending|sent|failed|retrying|not_paged),
                                         page_attempts, page_error, paged_at, last_paged_at,
                                         overdue ("1" once the 15-minute deadline passed)
* ``triage:esc:<id>:events``       list  JSON events, oldest first: {"at", "who", "action",
                                         "note"}; append-only, never edited from the dashboard

Times are Unix seconds (float) in hashes and ISO-8601 UTC in events.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis

from .store import STATUS

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)


class TransitionError(ValueError):
    """The escalation is not in a state that allows this action."""


def esc_key(rid: str) -> str:
    return f"triage:esc:{rid}"


def events_key(rid: str) -> str:
    return f"triage:esc:{rid}:events"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_event(r: redis.Redis, rid: str, action: str, who: str, note: str = "",
              now: float | None = None, pipe: Any = None) -> None:
    now = time.time() if now is None else now
    event = json.dumps({"at": _iso(now), "ts": now, "who": who, "action": action,
                        "note": note})
    (pipe or r).rpush(events_key(rid), event)


def events(r: redis.Redis, rid: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in r.lrange(events_key(rid), 0, -1)]


def details(r: redis.Redis, rid: str) -> dict[str, str]:
    return r.hgetall(esc_key(rid))


def status(r: redis.Redis, rid: str) -> str:
    return r.hget(STATUS, rid) or OPEN


def _move(r: redis.Redis, rid: str, allowed_from: tuple[str, ...], to: str, who: str,
          fields: dict[str, Any], note: str, now: float) -> None:
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(STATUS)
                current = pipe.hget(STATUS, rid)
                if current is None:
                    raise TransitionError(f"no escalation {rid}")
                if current not in allowed_from:
                    raise TransitionError(f"escalation is {current}, cannot become {to}")
                pipe.multi()
                pipe.hset(STATUS, rid, to)
                pipe.hset(esc_key(rid), mapping={k: str(v) for k, v in fields.items()})
                add_event(r, rid, to, who, note, now, pipe=pipe)
                pipe.execute()
                return
            except redis.WatchError:
                continue


def acknowledge(r: redis.Redis, rid: str, who: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    _move(r, rid, (OPEN,), ACKNOWLEDGED, who,
          {"acknowledged_by": who, "acknowledged_at": now}, "", now)


def resolve(r: redis.Redis, rid: str, who: str, note: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    _move(r, rid, (OPEN, ACKNOWLEDGED), RESOLVED, who,
          {"resolved_by": who, "resolved_at": now, "resolved_note": note}, note, now)
