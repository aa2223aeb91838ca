"""The audit log: who looked at which patient's record and who did what, append-only.

A Redis stream, ``triage:audit``; each entry ``{at, who, action, target, detail}`` (``at``
ISO-8601 UTC; the stream id is the exact time). Nothing in the service trims or edits it, and
the dashboard has no route that could: admins read it, nobody writes it except ``log``.

Actions: ``login``, ``login_failed``, ``logout``, ``view_record``, ``view_patient``, ``ack``,
``resolve``, ``call`` (a call-back attempt and its outcome), ``note`` (a working note; its
length, not its text), ``assign`` (taken, handed over, given back), ``enroll``,
``profile_update``, ``profile_status``, ``export``.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from . import keys
from .clock import iso_utc

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import AUDIT as STREAM  # noqa: F401

ACTIONS = ("login", "login_failed", "logout", "view_record", "view_patient", "ack", "resolve",
           "call", "note", "assign", "enroll", "profile_update", "profile_status", "export",
           "view_deadletters")


def log(r: redis.Redis, who: str, action: str, target: str = "", detail: str = "",
        now: float | None = None) -> str:
    now = time.time() if now is None else now
    at = iso_utc(now)
    return r.xadd(keys.of(r).AUDIT, {"at": at, "who": who or "-", "action": action,
                           "target": target or "", "detail": detail or ""})


def entries(r: redis.Redis, *, before: str | None = None, count: int = 100,
            who: str | None = None, action: str | None = None, target: str | None = None
            ) -> list[dict[str, Any]]:
    """Newest first, optionally older than the id ``before`` (paging) and filtered."""
    out: list[dict[str, Any]] = []
    last = f"({before}" if before else "+"
    while len(out) < count:
        chunk = r.xrevrange(keys.of(r).AUDIT, max=last, min="-", count=500)
        if not chunk:
            break
        for eid, fields in chunk:
            if who and fields.get("who") != who:
                continue
            if action and fields.get("action") != action:
                continue
            if target and fields.get("target") != target:
                continue
            out.append({"id": eid, **fields})
            if len(out) >= count:
                break
        last = f"({chunk[-1][0]}"
    return out
