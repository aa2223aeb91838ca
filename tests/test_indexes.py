"""Care-team reads cost what is open, not what was ever stored (issue 9, item 2).

The proof counts, on the real Redis, what each read asks of it: Redis commands (INFO
commandstats), round trips, and reply elements (every entry, member and field returned), with
100 and with 10,000 records in the history. No timings."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import pytest
import redis

from bot import escalations, indexes
from bot.dashboard import data
from bot.store import RECORDS, STATUS
from conftest import API_TOKEN, WORKER_SETTINGS, routine, soon, urgent

APP_SETTINGS = WORKER_SETTINGS
PASSWORD = "correct-horse-battery"
NOW = time.time()
DAY = 86400


def _size(reply: Any) -> int:
    if isinstance(reply, list | tuple):
        return sum(_size(x) for x in reply) or 1
    if isinstance(reply, dict):
        return sum(1 + _size(v) for v in reply.values()) or 1
    return 1


class Counting(redis.Connection):
    """A real connection that counts round trips and reply elements."""

    trips = 0
    elements = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.trips += 1
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        reply = super().read_response(*args, **kwargs)
        Counting.elements += _size(reply)
        return reply


def commands(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


def rec(phone: str, tier: str, ts: float, **extra: Any) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return {"phone": phone, "tier": tier, "flow": "fever", "flows": ["fever"], "kind":
            "completed", "reasons": ["seeded"], "conversation_id": f"c-{phone}-{ts}",
            "created_at": stamp, "started_at": stamp, "status": "open", **extra}


def seed(r: redis.Redis, n: int, now: float = NOW) -> None:
    """``n`` old records, every escalation among them resolved (the history)."""
    pipe = r.pipeline(transaction=False)
    tiers = ("ROUTINE", "SOON", "URGENT", "EMERGENCY")
    for i in range(n):
        ts = now - 200 * DAY + i * (150 * DAY / n)
        rid = f"{int(ts * 1000)}-{i}"
        tier = tiers[i % 4]
        pipe.xadd(RECORDS, {"data": json.dumps(rec(f"+1555{i % 5000:07d}", tier, ts))}, id=rid)
        pipe.hset(STATUS, rid, "open" if tier == "ROUTINE" else "resolved")
        if tier != "ROUTINE":
            pipe.hset(escalations.esc_key(rid), mapping={"resolved_at": ts + 600})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def add(r: redis.Redis, record: dict[str, Any]) -> str:
    rid = r.xadd(RECORDS, {"data": json.dumps(record)})
    r.hset(STATUS, rid, record["status"])
    return rid


def recent(r: redis.Redis, patient: str) -> None:
    """The same recent, open work at both sizes."""
    add(r, rec(patient, "EMERGENCY", NOW - 300))
    add(r, rec(patient, "URGENT", NOW - 3 * DAY))
    add(r, rec("+15559990001", "SOON", NOW - 2 * DAY))
    add(r, rec("+15559990002", "ROUTINE", NOW - DAY))


def nurse_client(app: Any) -> Any:
    from bot import users

    users.create(app.extensions["triage"].store.r, "nina", PASSWORD, "nurse")
    client = app.test_client()
    html = client.get("/dashboard/login").get_data(as_text=True)
    token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    resp = client.post("/dashboard/login", data={"username": "nina", "password": PASSWORD,
                                                 "csrf_token": token})
    assert resp.status_code == 303
    return client


def measure(app: Any, redis_url: str, n: int) -> dict[str, tuple[int, int, int]]:
    store = app.extensions["triage"].store
    seed(store.r, n)
    patient = "+15559994242"
    recent(store.r, patient)
    indexes.catch_up(store.r, NOW)
    late = add(store.r, rec(patient, "URGENT", NOW - 60))  # written after the last tick
    client = nurse_client(app)
    store.r = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, connection_class=Counting, decode_responses=True))
    plain = redis.Redis.from_url(redis_url)
    reads = {
        "queue": lambda: client.get("/dashboard/queue.json"),
        "alarm": lambda: client.get("/dashboard/alarm.json"),
        "overview": lambda: client.get("/dashboard/overview"),
        "phone": lambda: client.get(f"/api/escalations?phone={quote(patient)}",
                                    headers={"Authorization": f"Bearer {API_TOKEN}"}),
    }
    out = {}
    for name, read in reads.items():
        read()  # warm: the session's own look-ups settle
        Counting.trips = Counting.elements = 0
        before = commands(plain)
        resp = read()
        assert resp.status_code == 200, name
        out[name] = (commands(plain) - before, Counting.trips, Counting.elements)
        if name == "phone":
            ids = [x["id"] for x in resp.get_json()["escalations"]]
            assert ids[0] == late and len(ids) == 3  # the tail too, newest first
        if name == "queue":
            tiers = sorted(row["tier"] for row in resp.get_json()["rows"])
            assert tiers == ["EMERGENCY", "SOON", "URGENT", "URGENT"]  # the late one too
    # The same question asked of the stream (the old way) sees the history: the counter can
    # tell a read that grows from one that does not.
    Counting.trips = Counting.elements = 0
    assert len(store.records(phone=patient)) == 3
    out["stream scan"] = (0, Counting.trips, Counting.elements)
    return out


def test_care_reads_cost_the_same_at_100_and_10000_records(app: Any, redis_url: str) -> None:
    small = measure(app, redis_url, 100)
    redis.Redis.from_url(redis_url).flushdb()
    big = measure(app, redis_url, 10_000)
    scan_small, scan_big = small.pop("stream scan"), big.pop("stream scan")
    assert scan_big[2] > 50 * scan_small[2]
    assert small == big, (small, big)
    # and the history really is there to be read by a scan
    assert redis.Redis.from_url(redis_url).xlen(RECORDS) == 10_005


def test_routine_never_in_the_open_queue_and_resolved_records_leave_it(app: Any) -> None:
    r = app.extensions["triage"].store.r
    a = add(r, rec("+15550000001", "EMERGENCY", NOW - 100))
    b = add(r, rec("+15550000002", "ROUTINE", NOW - 90))
    c = add(r, rec("+15550000003", "SOON", NOW - 80))
    indexes.catch_up(r, NOW)
    assert r.zrange(indexes.open_key("EMERGENCY"), 0, -1) == [a]
    assert r.zrange(indexes.open_key("SOON"), 0, -1) == [c]
    assert not any(r.zcard(indexes.open_key(t)) for t in ("ROUTINE",))
    assert r.zrange(indexes.ROUTINE, 0, -1) == [b]
    escalations.acknowledge(r, a, "nina", now=NOW - 40)
    indexes.catch_up(r, NOW)
    assert r.zrange(indexes.open_key("EMERGENCY"), 0, -1) == [a]  # acknowledged: still active
    escalations.resolve(r, [a, c], "nina", "called back", now=NOW - 30)
    indexes.catch_up(r, NOW)
    assert not r.zcard(indexes.open_key("EMERGENCY")) and not r.zcard(indexes.open_key("SOON"))
    acted = {indexes.parse_acted(m)[1]: indexes.parse_acted(m)
             for m in r.zrange(indexes.ACTED, 0, -1)}
    assert acted[a][2] == pytest.approx(60, abs=1)  # acknowledged 60 s after it was written
    assert acted[c][2] == pytest.approx(50, abs=1)  # resolved straight away


def test_a_record_not_yet_indexed_is_in_every_read(app: Any) -> None:
    r = app.extensions["triage"].store.r
    indexes.catch_up(r, NOW)
    rid = add(r, rec("+15550000009", "EMERGENCY", NOW - 10))
    assert [x["id"] for x in indexes.unresolved(r, ("open",), ("EMERGENCY",))] == [rid]
    assert [x["id"] for x in indexes.patient_records(r, "+15550000009")] == [rid]
    o = data.overview(r, NOW, 900)
    assert o["totals"]["EMERGENCY"] == 1 and o["ack"][0]["waiting"] == 1
    indexes.catch_up(r, NOW)  # indexed now: counted once, not twice
    assert data.overview(r, NOW, 900)["totals"]["EMERGENCY"] == 1
    assert [x["id"] for x in indexes.unresolved(r, ("open",), ("EMERGENCY",))] == [rid]


def test_overview_from_the_indexes_equals_the_overview_from_the_stream(app: Any) -> None:
    r = app.extensions["triage"].store.r
    seed(r, 400, now=NOW + 170 * DAY)  # the last 30 days of the seed fall in the window
    ids = [add(r, rec(f"+1555000{i:04d}", t, NOW - i * 3600))
           for i, t in enumerate(("EMERGENCY", "URGENT", "SOON", "ROUTINE") * 5)]
    escalations.acknowledge(r, ids[0], "nina", now=NOW - 100)
    escalations.resolve(r, ids[1], "nina", "ok", now=NOW + 5000)
    from_stream = data.overview(r, NOW + 6000, 900)
    indexes.catch_up(r, NOW + 6000)
    assert data.overview(r, NOW + 6000, 900) == from_stream
    assert from_stream["totals"]["EMERGENCY"] > 5


def test_the_worker_feeds_the_indexes(app: Any, new_phone: Any, sms: Any) -> None:
    from bot import worker

    r = app.extensions["triage"].store.r
    u, s, q = new_phone(), new_phone(), new_phone()
    urgent(u)
    soon(s)
    routine(q)
    assert not r.exists(indexes.CURSOR)  # the webhook writes no cross-patient index
    worker.tick(app)
    assert r.zcard(indexes.open_key("URGENT")) == 1
    assert r.zcard(indexes.open_key("SOON")) == 1
    assert r.zcard(indexes.phone_key(q.number)) == 1
    assert r.get(indexes.CURSOR) == r.xrevrange(RECORDS, count=1)[0][0]


def test_retention_trims_the_indexes_not_the_records(app: Any) -> None:
    r = app.extensions["triage"].store.r
    old = add(r, rec("+15550000077", "URGENT", NOW - 40 * DAY))
    new = add(r, rec("+15550000077", "URGENT", NOW - DAY))
    escalations.resolve(r, [old], "nina", "done", now=NOW - 39 * DAY)
    indexes.catch_up(r, NOW, days=30)
    assert r.zrange(indexes.time_key("URGENT"), 0, -1) == [new]
    assert r.zrange(indexes.phone_key("+15550000077"), 0, -1) == [new]
    assert r.xlen(RECORDS) == 2


@pytest.mark.parametrize("value, expected", [(None, 400), ("30", 30), (30, 30)])
def test_retention_setting(value: str | None, expected: int) -> None:
    assert indexes.retention_days({"RECORD_INDEX_RETENTION_DAYS": value}) == expected


def test_retention_from_the_environment() -> None:
    from bot import config

    assert config.from_environment({})["RECORD_INDEX_RETENTION_DAYS"] == 400
    settings = config.from_environment({"RECORD_INDEX_RETENTION_DAYS": "90"})
    assert indexes.retention_days(settings) == 90


@pytest.mark.parametrize("value", ["0", "soon"])
def test_retention_setting_refuses_nonsense(value: str) -> None:
    with pytest.raises(ValueError):
        indexes.retention_days({"RECORD_INDEX_RETENTION_DAYS": value})


def test_an_unreadable_record_does_not_stop_the_indexing(app: Any) -> None:
    r = app.extensions["triage"].store.r
    bad = r.xadd(RECORDS, {"data": "{not json"})
    r.hset(STATUS, bad, "open")
    good = add(r, rec("+15550000055", "EMERGENCY", NOW - 5))
    assert [x["id"] for x in indexes.unresolved(r, ("open",))] == [good]
    indexes.catch_up(r, NOW)
    assert r.get(indexes.CURSOR) == good
    assert [x["id"] for x in indexes.unresolved(r, ("open",))] == [good]


def test_a_question_a_nurse_must_read_is_in_the_open_queue_until_resolved(
        app: Any, new_phone: Any, sms: Any) -> None:
    """A question from someone who says the patient is well is answered ROUTINE, but it is
    never dropped: it sits in the SOON band of the open queue until a nurse resolves it."""
    from bot import worker

    r = app.extensions["triage"].store.r
    phone = new_phone()
    reply = phone.send("can he use a normal toothbrush? hes fine, just asking")
    assert reply.startswith("You do not need to call right now.")
    worker.tick(app)
    [rid] = r.zrange(indexes.open_key("SOON"), 0, -1)
    record = app.extensions["triage"].store.record(rid)
    assert record["tier"] == "ROUTINE" and record["needs_reading"] and record["kind"] == "question"
    queue = nurse_client(app).get("/dashboard/queue.json").get_json()
    assert rid in json.dumps(queue)
    escalations.resolve(r, rid, "nina", "answered by phone", now=time.time())
    worker.tick(app)
    assert not r.zcard(indexes.open_key("SOON"))
