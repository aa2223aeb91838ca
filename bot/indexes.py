"""Care-team read indexes: the queue, the alarm, a patient's escalations and the overview cost
what is open (or what one patient has), never what the records stream holds in total.

The records stream (``triage:records``, ``store.py``) is the truth; these keys are derived from
it by the worker (``worker.tick`` calls ``catch_up``), never by the webhook, so a message's own
commit stays in the patient's slot. Readers combine the indexes with the *tail*: the records
written after the last one indexed (``triage:idx:cursor``), read straight from the stream, so a
record the worker has not indexed yet (a worker restarting, a tick not yet due) is never missing
from the queue, only a little more expensive to show.

Keys (this module owns their format, beside ``store.py``'s key helpers):

* ``triage:idx:cursor``               string  id of the last record indexed
* ``triage:idx:open:<TIER>``          zset    record id -> created_at (unix s), every EMERGENCY /
                                              URGENT / SOON record not yet resolved (ROUTINE
                                              records never enter it: nobody resolves them)
* ``triage:idx:time:<TIER>``          zset    record id -> created_at, every record of the tier
                                              kept RECORD_INDEX_RETENTION_DAYS (the overview's
                                              per-day counts are ZCOUNTs, in any time zone)
* ``triage:idx:acted``                zset    "<tier>|<id>|<seconds to first action>|<overdue>"
                                              -> created_at, escalations someone acknowledged
                                              or resolved (the overview's time to acknowledge)
* ``triage:idx:routine``              zset    record id -> created_at, the latest ROUTINE_KEEP
                                              ROUTINE records (shown only when asked for)
* ``triage:idx:phone:{<phone>}``      zset    record id -> created_at, one patient's records
                                              (the patient's hash tag: same slot as the rest)

Retention: ``RECORD_INDEX_RETENTION_DAYS`` (default 400) bounds the time, acted and per-patient
indexes; the records stream itself is not trimmed here (see docs/performance.md).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from . import keys

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import IDX_ACTED as ACTED  # noqa: F401
from .keys import IDX_CURSOR as CURSOR  # noqa: F401
from .keys import IDX_ROUTINE as ROUTINE  # noqa: F401
from .keys import esc_key, open_key, phone_key, time_key  # noqa: F401
from .store import RECORDS, STATUS, decode_record  # noqa: F401

log = logging.getLogger(__name__)
OPEN_TIERS = ("EMERGENCY", "URGENT", "SOON")  # ROUTINE never enters the open queue
ALL_TIERS = ("EMERGENCY", "URGENT", "SOON", "ROUTINE")
ROUTINE_KEEP = 2000
BATCH = 1000  # records indexed per pipeline
MAX_BATCHES = 200  # per tick: 200,000 records; the rest next tick (readers read the tail)
DEFAULT_RETENTION_DAYS = 400
ISO = "%Y-%m-%dT%H:%M:%SZ"


def retention_days(config: Any = None) -> int:
    """RECORD_INDEX_RETENTION_DAYS from the app's config (``config.py`` reads it from the
    environment), else 400."""
    raw = (config or {}).get("RECORD_INDEX_RETENTION_DAYS")
    try:
        days = int(raw) if raw not in (None, "") else DEFAULT_RETENTION_DAYS
    except ValueError as exc:
        raise ValueError("RECORD_INDEX_RETENTION_DAYS must be a whole number of days") from exc
    if days < 1:
        raise ValueError("RECORD_INDEX_RETENTION_DAYS must be at least 1")
    return days


def created_ts(rid: str, rec: dict[str, Any]) -> float:
    """The record's created_at (unix s); the stream id's time when it has none."""
    try:
        return datetime.strptime(rec.get("created_at") or "", ISO).replace(
            tzinfo=UTC).timestamp()
    except ValueError:
        return int(rid.split("-")[0]) / 1000


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def first_action(esc: Iterable[str | None]) -> float | None:
    """acknowledged_at, else resolved_at (a record resolved straight away was acknowledged
    when it was resolved)."""
    acked, resolved = list(esc)[:2]
    return _float(acked) if acked else _float(resolved)


def acted_member(tier: str, rid: str, seconds: float, overdue: str | None) -> str:
    return f"{tier}|{rid}|{max(0.0, seconds)!r}|{1 if overdue == '1' else 0}"


def parse_acted(member: str) -> tuple[str, str, float, bool]:
    tier, rid, seconds, overdue = member.split("|")
    return tier, rid, float(seconds), overdue == "1"


# --------------------------------------------------------------------------- the worker side

def catch_up(r: redis.Redis, now: float, days: int = DEFAULT_RETENTION_DAYS,
             max_batches: int = MAX_BATCHES) -> int:
    """Index the records written since the cursor, drop resolved records from the open
    queue, note first actions, trim what is older than the retention. Idempotent (every
    write is a ZADD/ZREM of the same member): two workers, or a crash between two writes,
    leave the same indexes. Returns the number of records indexed."""
    done = 0
    for _ in range(max_batches):
        cursor = r.get(keys.of(r).IDX_CURSOR)
        entries = r.xrange(keys.of(r).RECORDS, min=f"({cursor}" if cursor else "-", max="+",
                           count=BATCH)
        if not entries:
            break
        _index(r, entries, now, days)
        done += len(entries)
        if len(entries) < BATCH:
            break
    reconcile(r)
    _trim(r, now, days)
    return done


def _decode(rid: str, fields: dict[str, str]) -> dict[str, Any] | None:
    try:
        rec: dict[str, Any] | None = decode_record(fields)
    except (KeyError, TypeError, ValueError):
        rec = None
    if rec is None:
        log.error("record %s cannot be read; left out of the care-team indexes", rid)
        return None
    return rec


def _index(r: redis.Redis, entries: list[tuple[str, dict[str, str]]], now: float,
           days: int) -> None:
    recs = [(rid, rec) for rid, fields in entries
            if (rec := _decode(rid, fields)) is not None]
    if not recs:
        r.set(keys.of(r).IDX_CURSOR, entries[-1][0])
        return
    ids = [rid for rid, _ in recs]
    read = r.pipeline(transaction=False)
    read.hmget(keys.of(r).STATUS, ids)
    for rid in ids:
        read.hmget(keys.of(r).esc_key(rid), "acknowledged_at", "resolved_at", "overdue")
    statuses, *escs = read.execute()
    oldest = now - days * 86400
    write = r.pipeline(transaction=False)
    for (rid, rec), status, esc in zip(recs, statuses, escs, strict=True):
        tier = rec.get("tier", "")
        ts = created_ts(rid, rec)
        if tier in ALL_TIERS:
            write.zadd(keys.of(r).time_key(tier), {rid: ts})
        if rec.get("phone"):
            write.zadd(keys.of(r).phone_key(rec["phone"]), {rid: ts})
            write.zremrangebyscore(keys.of(r).phone_key(rec["phone"]), "-inf", f"({oldest}")
        if tier == "ROUTINE":
            write.zadd(keys.of(r).IDX_ROUTINE, {rid: ts})
            if rec.get("needs_reading") and (status or rec.get("status", "open")) != "resolved":
                # a question a nurse must read (bot/conversation/turn.py): in the SOON band of
                # the open queue until resolved, though its answer was ROUTINE
                write.zadd(keys.of(r).open_key("SOON"), {rid: ts})
        elif tier in OPEN_TIERS:
            acted = first_action(esc)
            if acted is not None:
                write.zadd(keys.of(r).IDX_ACTED, {acted_member(tier, rid, acted - ts, esc[2]): ts})
            if (status or rec.get("status", "open")) != "resolved":
                write.zadd(keys.of(r).open_key(tier), {rid: ts})
    write.zremrangebyrank(keys.of(r).IDX_ROUTINE, 0, -ROUTINE_KEEP - 1)
    write.set(keys.of(r).IDX_CURSOR, entries[-1][0])
    write.execute()


def reconcile(r: redis.Redis) -> None:
    """Resolved records leave the open queue; a first action is noted once. Costs what is
    open, not what was ever written."""
    read = r.pipeline(transaction=False)
    for tier in OPEN_TIERS:
        read.zrange(keys.of(r).open_key(tier), 0, -1, withscores=True)
    members = [(tier, rid, ts) for tier, found in zip(OPEN_TIERS, read.execute(), strict=True)
               for rid, ts in found]
    if not members:
        return
    read = r.pipeline(transaction=False)
    read.hmget(keys.of(r).STATUS, [rid for _, rid, _ in members])
    for _, rid, _ in members:
        read.hmget(keys.of(r).esc_key(rid), "acknowledged_at", "resolved_at", "overdue")
    statuses, *escs = read.execute()
    write = r.pipeline(transaction=False)
    for (tier, rid, ts), status, esc in zip(members, statuses, escs, strict=True):
        acted = first_action(esc)
        if acted is not None:
            write.zadd(keys.of(r).IDX_ACTED, {acted_member(tier, rid, acted - ts, esc[2]): ts})
        if status == "resolved":
            write.zrem(keys.of(r).open_key(tier), rid)
    write.execute()


def _trim(r: redis.Redis, now: float, days: int) -> None:
    oldest = f"({now - days * 86400}"
    pipe = r.pipeline(transaction=False)
    for tier in ALL_TIERS:
        pipe.zremrangebyscore(keys.of(r).time_key(tier), "-inf", oldest)
    pipe.zremrangebyscore(keys.of(r).IDX_ACTED, "-inf", oldest)
    pipe.execute()


# --------------------------------------------------------------------------- the read side

def tail(r: redis.Redis, cursor: str | None) -> list[tuple[str, dict[str, Any]]]:
    """Records written after ``cursor`` (not indexed yet), oldest first. Normally a tick's
    worth; all of them when the worker is behind (slower, never incomplete)."""
    out: list[tuple[str, dict[str, Any]]] = []
    low = f"({cursor}" if cursor else "-"
    while True:
        chunk = r.xrange(keys.of(r).RECORDS, min=low, max="+", count=BATCH)
        out.extend((rid, rec) for rid, fields in chunk
                   if (rec := _decode(rid, fields)) is not None)
        if len(chunk) < BATCH:
            return out
        low = f"({chunk[-1][0]}"


def fetch(r: redis.Redis, ids: list[str]) -> list[dict[str, Any]]:
    """Records by id, with their current status, in the order given (ids no longer in the
    stream are skipped)."""
    if not ids:
        return []
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.of(r).STATUS, ids)
    for rid in ids:
        pipe.xrange(keys.of(r).RECORDS, min=rid, max=rid)
    statuses, *found = pipe.execute()
    out = []
    for rid, status, entries in zip(ids, statuses, found, strict=True):
        rec = _decode(rid, entries[0][1]) if entries else None
        if rec is not None:
            out.append({"id": rid, **rec, "status": status or rec.get("status", "open")})
    return out


def unresolved(r: redis.Redis, statuses: Iterable[str], tiers: Iterable[str] = ()
               ) -> list[dict[str, Any]]:
    """Records of ``tiers`` (all when empty) whose status is one of ``statuses`` (open,
    acknowledged): the open index, the latest ROUTINE records when ROUTINE is asked for, and
    the tail."""
    wanted = set(statuses)
    tiers = tuple(tiers) or ALL_TIERS
    pipe = r.pipeline(transaction=False)
    pipe.get(keys.of(r).IDX_CURSOR)
    for tier in tiers:
        names = keys.of(r)
        pipe.zrange(names.IDX_ROUTINE if tier == "ROUTINE" else names.open_key(tier), 0, -1)
    cursor, *found = pipe.execute()
    ids = list(dict.fromkeys(rid for members in found for rid in members))
    recs = fetch(r, ids)
    known = set(ids)
    fresh = [(rid, rec) for rid, rec in tail(r, cursor)
             if rid not in known and queue_tier(rec) in tiers]
    if fresh:
        states = r.hmget(keys.of(r).STATUS, [rid for rid, _ in fresh])
        recs.extend({"id": rid, **rec, "status": st or rec.get("status", "open")}
                    for (rid, rec), st in zip(fresh, states, strict=True))
    return [rec for rec in recs if rec["status"] in wanted and queue_tier(rec) in tiers]


def queue_tier(rec: dict[str, Any]) -> str:
    """The band of the open queue a record waits in: its tier, except a ROUTINE question a
    nurse must read (``needs_reading``), which waits with SOON."""
    tier = str(rec.get("tier") or "")
    return "SOON" if tier == "ROUTINE" and rec.get("needs_reading") else tier


def patient_records(r: redis.Redis, phone: str, *, tiers: Iterable[str] = (),
                    status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """One patient's records, newest first, through the patient's index and the tail: the
    cost of this patient's history, not everyone's."""
    tiers = set(tiers)

    def keep(rec: dict[str, Any]) -> bool:
        return ((not tiers or rec.get("tier") in tiers)
                and (not status or rec["status"] == status))

    cursor = r.get(keys.of(r).IDX_CURSOR)
    fresh = [(rid, rec) for rid, rec in tail(r, cursor) if rec.get("phone") == phone]
    out: list[dict[str, Any]] = []
    if fresh:
        states = r.hmget(keys.of(r).STATUS, [rid for rid, _ in fresh])
        for (rid, rec), st in zip(reversed(fresh), reversed(states), strict=True):
            full = {"id": rid, **rec, "status": st or rec.get("status", "open")}
            if keep(full):
                out.append(full)
    seen = {rid for rid, _ in fresh}
    start = 0
    while len(out) < limit:
        ids = r.zrevrange(keys.of(r).phone_key(phone), start, start + BATCH - 1)
        if not ids:
            break
        start += len(ids)
        for rec in fetch(r, [rid for rid in ids if rid not in seen]):
            if keep(rec) and rec.get("phone") == phone:
                out.append(rec)
        if len(ids) < BATCH:
            break
    out.sort(key=lambda rec: _id_key(rec["id"]), reverse=True)
    return out[:limit]


def _id_key(rid: str) -> tuple[int, int]:
    ms, _, seq = rid.partition("-")
    return int(ms), int(seq or 0)


def overview_facts(r: redis.Redis, start: float, end: float, day_edges: list[float]
                   ) -> dict[str, Any]:
    """What the overview needs for records created in [start, end]: per-day counts by tier
    (``day_edges``: each day's first second, then the end), and one (tier, created, first
    action or None, overdue flag, status) per EMERGENCY / URGENT / SOON escalation. Costs
    days x tiers ZCOUNTs plus the window's escalations, whatever the history."""
    pipe = r.pipeline(transaction=False)
    pipe.get(keys.of(r).IDX_CURSOR)
    for tier in ALL_TIERS:
        for lo, hi in itertools.pairwise(day_edges):
            pipe.zcount(keys.of(r).time_key(tier), lo, f"({hi}" if hi < end else hi)
    pipe.zrangebyscore(keys.of(r).IDX_ACTED, start, end, withscores=True)
    for tier in OPEN_TIERS:
        pipe.zrangebyscore(keys.of(r).open_key(tier), start, end, withscores=True)
    res = pipe.execute()
    cursor = res[0]
    n_days = len(day_edges) - 1
    counts = {tier: res[1 + i * n_days: 1 + (i + 1) * n_days] for i, tier in
              enumerate(ALL_TIERS)}
    acted_raw = res[1 + len(ALL_TIERS) * n_days]
    open_raw = res[2 + len(ALL_TIERS) * n_days:]
    escalations: dict[str, tuple[str, float, float | None, bool, str]] = {}
    for member, created in acted_raw:
        tier, rid, seconds, overdue = parse_acted(member)
        escalations[rid] = (tier, created, created + seconds, overdue, "acted")
    live = [(tier, rid, ts) for tier, found in zip(OPEN_TIERS, open_raw, strict=True)
            for rid, ts in found]
    fresh = [(rid, rec) for rid, rec in tail(r, cursor)
             if start <= created_ts(rid, rec) <= end]
    pipe = r.pipeline(transaction=False)
    for rid, rec in fresh:  # indexed while we read? then already counted
        pipe.zscore(keys.of(r).time_key(rec.get("tier", "")), rid)
    for _tier, rid, _ in live:
        pipe.hmget(keys.of(r).esc_key(rid), "acknowledged_at", "resolved_at", "overdue")
        pipe.hget(keys.of(r).STATUS, rid)
    for rid, _rec in fresh:
        pipe.hmget(keys.of(r).esc_key(rid), "acknowledged_at", "resolved_at", "overdue")
        pipe.hget(keys.of(r).STATUS, rid)
    got = pipe.execute()
    scores, rest = got[: len(fresh)], got[len(fresh):]
    for (tier, rid, ts), esc, status in zip(live, rest[0::2], rest[1::2], strict=False):
        escalations[rid] = (tier, ts, first_action(esc), esc[2] == "1", status or "open")
    tail_rest = rest[2 * len(live):]
    for (rid, rec), score, esc, status in zip(fresh, scores, tail_rest[0::2], tail_rest[1::2],
                                              strict=True):
        tier, created = rec.get("tier", ""), created_ts(rid, rec)
        if score is None and tier in counts:
            for i, (lo, hi) in enumerate(itertools.pairwise(day_edges)):
                if lo <= created < hi or (hi >= end and lo <= created <= hi):
                    counts[tier][i] += 1
                    break
        if tier in OPEN_TIERS:
            escalations[rid] = (tier, created, first_action(esc), esc[2] == "1",
                                status or rec.get("status", "open"))
    return {"counts": counts, "escalations": list(escalations.values())}
