"""Issue 9 item 2: records older than RECORD_RETENTION_DAYS leave Redis, exported first, only
when finished (resolved, or ROUTINE), paged and indexed; the stream is trimmed as a prefix;
an export folder that cannot be written removes nothing (bot/retention.py). Real Redis, real
worker ticks, real files."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from bot import escalations, retention
from bot.keys import RECORDS, STATUS, esc_key, events_key
from bot.store import decode_record
from bot.worker import tick
from conftest import WORKER_SETTINGS, records, routine, urgent

APP_SETTINGS = {**WORKER_SETTINGS, "RECORD_RETENTION_DAYS": 400}
DAY = 86400.0


def exported(folder: Path) -> list[dict]:
    lines = []
    for path in sorted(folder.glob("records-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_finished_old_records_are_exported_then_removed_and_open_ones_stay(
        app, sms, new_phone, tmp_path):
    r = app.extensions["triage"].store.r
    folder = Path(app.instance_path) / "exports"
    first, second, third = new_phone(), new_phone(), new_phone()
    routine(first)                      # ROUTINE: finished when written
    urgent(second)                      # URGENT: finished once resolved
    urgent(third)                       # URGENT, never resolved: stays, and blocks after it
    now = time.time()
    tick(app, now)                      # paged and indexed
    rids = [rec["id"] for rec in sorted(records(app), key=lambda x: x["id"])]
    assert len(rids) == 3
    escalations.resolve(r, rids[1], "nina", "called back, fine", now=now)

    # not old yet: nothing moves
    assert retention.run(r, now + 399 * DAY, 400, folder) == 0
    assert r.xlen(RECORDS) == 3 and not folder.exists()

    # old: the two finished ones leave, in order; the open one stays, and the stream is a prefix
    tick(app, now + 401 * DAY)
    assert r.xlen(RECORDS) == 1
    assert r.xrange(RECORDS)[0][0] == rids[2]
    lines = exported(folder)
    assert [x["id"] for x in lines] == rids[:2]
    assert lines[0]["record"]["tier"] == "ROUTINE"
    assert lines[1]["status"] == "resolved" and lines[1]["escalation"]["resolved_by"] == "nina"
    assert any(json.loads(e)["action"] == "resolved" for e in lines[1]["events"])
    assert r.hget(STATUS, rids[1]) is None and not r.exists(esc_key(rids[1]))
    assert not r.exists(events_key(rids[1]))
    assert r.hget(STATUS, rids[2]) == "open"
    # patient data: owner-only folder and file
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.glob("*.jsonl"))

    # once resolved, the last one leaves too; running again moves nothing twice
    escalations.resolve(r, rids[2], "nina", "seen in clinic", now=now)
    assert retention.run(r, now + 402 * DAY, 400, folder) == 1
    assert retention.run(r, now + 403 * DAY, 400, folder) == 0
    assert r.xlen(RECORDS) == 0
    assert [x["id"] for x in exported(folder)] == rids


def test_nothing_leaves_that_the_pager_has_not_acknowledged_or_the_indexes_not_read(
        app, sms, new_phone, tmp_path):
    r = app.extensions["triage"].store.r
    folder = tmp_path / "exports"
    routine(new_phone())
    now = time.time()
    # the worker never ran: no consumer group, no index cursor
    assert retention.run(r, now + 500 * DAY, 400, folder) == 0
    assert r.xlen(RECORDS) == 1
    tick(app, now)
    routine(new_phone())  # written after the tick: not paged, not indexed yet
    assert retention.run(r, now + 500 * DAY, 400, folder) == 1
    assert r.xlen(RECORDS) == 1
    assert decode_record(r.xrange(RECORDS)[0][1])["tier"] == "ROUTINE"


def test_an_export_folder_that_cannot_be_written_removes_nothing(app, sms, new_phone,
                                                                 tmp_path, caplog):
    r = app.extensions["triage"].store.r
    routine(new_phone())
    now = time.time()
    tick(app, now)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    assert retention.run(r, now + 500 * DAY, 400, blocked) == 0
    assert r.xlen(RECORDS) == 1 and len(records(app)) == 1
    assert "cannot be written" in caplog.text


def test_retention_zero_keeps_everything(app, sms, new_phone, tmp_path):
    r = app.extensions["triage"].store.r
    routine(new_phone())
    tick(app, time.time())
    assert retention.run(r, time.time() + 5000 * DAY, 0, tmp_path) == 0
    assert r.xlen(RECORDS) == 1
    assert not os.listdir(tmp_path) or not list(tmp_path.glob("records-*.jsonl"))
