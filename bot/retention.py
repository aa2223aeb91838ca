"""Records older than ``RECORD_RETENTION_DAYS`` leave Redis, exported to disk first (issue 9).

A cancer centre keeps years of records; Redis keeps the ones the care team works with. The
worker (``worker.tick``) moves older records out, oldest first:

1. **Only finished ones.** A record leaves only when it is older than the retention, its
   escalation is resolved (a ROUTINE record is finished when written, unless it is a question
   a nurse must read: then when resolved), the pager's consumer group has read and
   acknowledged it (``pagers``: not pending, not after its last-delivered id) and the
   care-read indexes have indexed it. The first record that is not finished stops the run:
   the stream is trimmed as a prefix (``XTRIM MINID``), never with holes.
2. **Exported, then removed.** Each record is appended to
   ``EXPORT_DIR/records-<YYYY-MM>.jsonl`` (one JSON object a line: the id, the record, its
   status, its escalation's hash and events), flushed and fsync'd, and only then removed
   from Redis (the stream entry, its status, its escalation keys). A crash between the two
   exports the same records again next time: a reader of the files keeps the last line of
   each id. If the folder cannot be written, nothing is removed (and it is logged).

The files hold patient data (numbers, what they wrote): the folder is created owner-only
(0700) and each file 0600; move them to the clinic's record system and keep them as it keeps
records. ``RECORD_RETENTION_DAYS=0`` keeps every record in Redis.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import redis

from . import keys
from .paging import GROUP  # the pager's consumer group: what it has not acknowledged stays
from .store import decode_record

log = logging.getLogger(__name__)
BATCH = 500


def _id(rid: str) -> tuple[int, int]:
    ms, _, seq = rid.partition("-")
    return int(ms), int(seq or 0)


def _limit(r: redis.Redis) -> tuple[int, int] | None:
    """Nothing at or after this id may leave: the pager's first pending entry, the entry after
    its last delivered one, the first record not indexed yet. None: nothing may leave."""
    cursor = r.get(keys.of(r).IDX_CURSOR)  # the last record indexed
    if not cursor:
        return None
    indexed = _id(cursor)
    limits = [(indexed[0], indexed[1] + 1)]
    try:
        groups = {g["name"]: g for g in r.xinfo_groups(keys.of(r).RECORDS)}
    except redis.ResponseError:  # no stream yet
        return None
    group = groups.get(GROUP)
    if group is None:
        return None  # the pager never read the stream: nothing has been paged
    last = _id(group["last-delivered-id"])
    limits.append((last[0], last[1] + 1))
    pending = r.xpending(keys.of(r).RECORDS, GROUP)
    if pending and pending.get("pending"):
        limits.append(_id(pending["min"]))
    return min(limits)


def _finished(rec: dict[str, Any], status: str | None) -> bool:
    if (status or rec.get("status") or "open") == "resolved":
        return True
    return rec.get("tier") == "ROUTINE" and not rec.get("needs_reading")


def _export(folder: Path, lines: list[str], now: float) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"records-{time.strftime('%Y-%m', time.gmtime(now))}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        os.fsync(out.fileno())
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new file's name is durable too
    finally:
        os.close(dir_fd)


def run(r: redis.Redis, now: float, days: int, folder: str | Path) -> int:
    """Export and remove the finished records older than ``days``; the number removed."""
    if days <= 0:
        return 0
    cutoff = (int((now - days * 86400) * 1000), 0)
    oldest = r.xrange(keys.of(r).RECORDS, count=1)
    if not oldest or _id(oldest[0][0]) >= cutoff:
        return 0  # the common case: one round trip a tick
    limit = _limit(r)
    if limit is None:
        return 0
    stop = min(cutoff, limit)
    removed = 0
    low = "-"
    while True:
        entries = r.xrange(keys.of(r).RECORDS, min=low, max="+", count=BATCH)
        take: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []
        blocked = False
        statuses = r.hmget(keys.of(r).STATUS, [rid for rid, _ in entries]) if entries else []
        for (rid, fields), status in zip(entries, statuses, strict=True):
            if _id(rid) >= stop:
                blocked = True
                break
            try:
                rec: dict[str, Any] | None = decode_record(fields)
            except (KeyError, TypeError, ValueError):
                rec = None  # unreadable: exported as it is (it is in the dead letters too)
            if rec is not None and not _finished(rec, status):
                blocked = True
                break
            take.append((rid, rec, {"status": status or "", "fields": fields}))
        if take:
            pipe = r.pipeline(transaction=False)
            for rid, _, _ in take:
                pipe.hgetall(keys.of(r).esc_key(rid))
                pipe.lrange(keys.of(r).events_key(rid), 0, -1)
            got = pipe.execute()
            lines = []
            for k, (rid, rec, meta) in enumerate(take):
                esc, events = got[2 * k], got[2 * k + 1]
                lines.append(json.dumps({
                    "id": rid, "record": rec, "status": meta["status"], "escalation": esc,
                    "events": events, "raw": None if rec is not None else meta["fields"]},
                    separators=(",", ":")))
            try:
                _export(Path(folder), lines, now)
            except OSError as exc:
                log.error("records not moved out of Redis: the export folder cannot be "
                          "written (%s)", type(exc).__name__)
                return removed
            ids = [rid for rid, _, _ in take]
            pipe = r.pipeline(transaction=False)
            pipe.hdel(keys.of(r).STATUS, *ids)
            names = keys.of(r)
            for rid in ids:
                gone = (names.esc_key(rid), names.events_key(rid), names.members_key(rid),
                        names.ledger_key(rid), names.delivery_key(rid), names.voice_key(rid))
                if names.cluster:  # redis-py's cluster pipeline deletes one key a command
                    for key in gone:
                        pipe.delete(key)
                else:
                    pipe.delete(*gone)
            last = _id(ids[-1])
            pipe.xtrim(keys.of(r).RECORDS, minid=f"{last[0]}-{last[1] + 1}", approximate=False)
            pipe.execute()
            removed += len(ids)
        if blocked or len(entries) < BATCH:
            break
        low = f"({entries[-1][0]}"
    if removed:
        log.info("retention: %d records older than %d days exported and removed from Redis",
                 removed, days)
    return removed

