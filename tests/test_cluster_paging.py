"""Paging and the care team's work on a real 3-master Redis Cluster (scripts/redis_cluster.py):
every service-wide key carries the tag ``{triage}`` there (``keys.Layout``), so the pager's and
the care team's transactions are in one slot. A signed webhook conversation that ends EMERGENCY
is paged by a real worker tick, its delivery receipt recorded, called by voice, re-paged when
overdue; a nurse's acknowledgement on the dashboard stops the re-pages and the calls; the
escalation is raised in place, a dead letter is set aside, a profile saved through the API,
and retention removes a resolved record. On one Redis server every key keeps the name it
always had, and no module of the service names a service-wide key any other way than through
the layout."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from bot import audit, escalations, keys, notify, store, users
from bot.paging import record_time
from bot.store import LateCluster
from bot.worker import tick
from conftest import (
    API_TOKEN,
    BASE_URL,
    ON_CALL,
    FakeBackend,
    Phone,
    actions,
    esc,
    records,
    sign,
)

MIN = 60.0
DAY = 86400.0
PASSWORD = "correct-horse-battery"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
TRIAGE_SLOT = key_slot(b"triage")


def names_of_one_server() -> dict[str, str]:
    """Every service-wide key of a deployment on one server, as it has always been named."""
    one = keys.ONE
    return {
        one.RECORDS: "triage:records", one.STATUS: "triage:status",
        one.INFLIGHT: "triage:inflight", one.DUE: "triage:pages:due",
        one.DEADLINES: "triage:pages:deadline", one.DEAD_LETTERS: "triage:deadletter",
        one.FOLLOWUPS: "triage:followups", one.VOICE_DUE: "triage:voice:due",
        one.VOICE_WAITING: "triage:voice:waiting", one.IDX_CURSOR: "triage:idx:cursor",
        one.IDX_ACTED: "triage:idx:acted", one.IDX_ROUTINE: "triage:idx:routine",
        one.USERS: "triage:users", one.PATIENTS: "triage:patients", one.AUDIT: "triage:audit",
        one.esc_key("1-0"): "triage:esc:1-0", one.events_key("1-0"): "triage:esc:1-0:events",
        one.members_key("1-0"): "triage:esc:1-0:members",
        one.ledger_key("1-0"): "triage:esc:1-0:pages",
        one.delivery_key("1-0"): "triage:esc:1-0:delivery",
        one.voice_key("1-0"): "triage:esc:1-0:voice",
        one.line_key("r1"): "triage:voice:line:r1",
        one.link_key("c1"): "triage:followup:conv:c1",
        one.holder_key("+15550001", "e1"): "triage:escalation:{+15550001}:e1",
        one.episode_key("+15550001", "e1"): "triage:episode:{+15550001}:e1",
        one.episode_events_key("+15550001", "e1"): "triage:episode:{+15550001}:e1:events",
        one.open_key("URGENT"): "triage:idx:open:URGENT",
        one.time_key("URGENT"): "triage:idx:time:URGENT",
        one.phone_key("+15550001"): "triage:idx:phone:{+15550001}",
        one.user_key("nina"): "triage:user:nina",
    }


def test_one_server_keeps_every_name_and_a_cluster_puts_them_in_one_slot() -> None:
    for got, before in names_of_one_server().items():
        assert got == before
    # the module's names (imported by tests and older code) are one server's
    assert (keys.RECORDS, keys.STATUS, keys.DUE, keys.esc_key("1-0"), keys.USERS) == (
        "triage:records", "triage:status", "triage:pages:due", "triage:esc:1-0",
        "triage:users")
    assert (store.RECORDS, escalations.STATUS, escalations.esc_key("9-1")) == (
        "triage:records", "triage:status", "triage:esc:9-1")
    # on a cluster: the same names behind the tag {triage}, all in one slot
    for name in names_of_one_server():
        clustered = "{triage}:" + name.removeprefix("triage:")
        assert key_slot(clustered.encode()) == TRIAGE_SLOT
    c = keys.CLUSTER
    assert c.holder_key("+15550001", "e1") == "{triage}:escalation:{+15550001}:e1"
    assert key_slot(c.holder_key("+15550001", "e1").encode()) == TRIAGE_SLOT
    assert key_slot(keys.moved_key("x").encode()) == key_slot(c.RECORDS.encode())
    # the layout follows the client the setting made, not what a server says
    assert keys.of(redis.Redis()) is keys.ONE
    assert keys.of(redis.Redis().pipeline()) is keys.ONE
    assert keys.of(LateCluster("redis://127.0.0.1:1", {})) is keys.CLUSTER
    assert keys.layout(True) is keys.CLUSTER and keys.layout(False) is keys.ONE


def cluster_keys(url: str) -> list[str]:
    """Every key on every master of the cluster."""
    client = redis.RedisCluster.from_url(url, decode_responses=True)
    try:
        found: list[str] = []
        for node in client.get_primaries():
            found += list(client.get_redis_connection(node).scan_iter(count=1000))
        return found
    finally:
        client.close()


def only_tagged_keys(url: str) -> None:
    """Every key is the patient's (its number as the tag), a slot's pending set, in the slot
    of {triage}, or a key that is never used with another one (any slot)."""
    single = ("worker:heartbeat", "triage:zdict:", "triage:login:", "triage:websession:")
    for key in cluster_keys(url):
        if key.startswith(single):
            continue
        if re.match(r"^triage:\{\+\d+\}:", key) or re.match(r"^triage:\{\w{1,3}\}:pending$",
                                                              key):
            continue
        assert key.startswith("{triage}:") and key_slot(key.encode()) == TRIAGE_SLOT, key


def token(client: Any, path: str) -> str:
    found = TOKEN_RE.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


@pytest.mark.cluster
def test_an_emergency_on_the_cluster_is_paged_called_repaged_and_stopped_by_a_nurse(
        cluster_app: Any) -> None:
    app = cluster_app
    r = app.extensions["triage"].store.r
    sms = FakeBackend()
    app.extensions["sms"] = sms
    phone = Phone(app.test_client())
    phone.send("my son cant breathe")
    [rec] = records(app)
    assert rec["tier"] == "EMERGENCY"
    rid, t0 = rec["id"], record_time(rec["id"], rec)
    assert r.hget("{triage}:status", rid) == "open"  # moved by the message itself
    assert not r.exists("triage:records")  # one server's name is not used on a cluster

    # a real worker tick pages every on-call number
    done = tick(app, t0 + 1)
    assert done["relayed"] == 0 and done["records"] == 1 and done["pages"] == 1
    assert sorted(n for n, _ in sms.sent) == sorted(ON_CALL)
    assert all(body.startswith("EMERGENCY") for _, body in sms.sent)
    assert esc(app, rid)["page_status"] == "sent" and actions(app, rid) == ["paged"]
    assert tick(app, t0 + 2)["pages"] == 0 and len(sms.sent) == 2  # once

    # Twilio's signed receipt: the second number got it (the receipts' transaction)
    form = {"AccountSid": "ACtest", "MessageSid": "SM2", "MessageStatus": "delivered"}
    url = sms.callbacks[1]
    assert url and url.startswith(BASE_URL)
    receipt = app.test_client().post(url[len(BASE_URL):], data=form,
                                     headers={"X-Twilio-Signature": sign(url, form)})
    assert receipt.status_code == 204
    shown = {d["to"]: d["status"] for d in notify.delivery(r, rid)}
    assert sorted(shown.values()) == ["delivered", "queued"], shown
    assert "sms_delivered" in actions(app, rid)

    # delivered but not acknowledged within 5 minutes: the voice ladder calls the first number
    assert tick(app, t0 + 2 * MIN)["calls"] == 0
    assert tick(app, t0 + 5 * MIN)["calls"] == 1
    assert [to for to, _, _ in sms.dialed] == [ON_CALL[0]]

    # not acknowledged by the deadline (15 min): re-paged, marked overdue
    done = tick(app, t0 + 15 * MIN + 1)
    assert done["overdue"] == 1 and done["pages"] == 1
    overdue = [body for _, body in sms.sent[2:]]
    assert len(overdue) == 2 and all(b.startswith("OVERDUE, not acknowledged: EMERGENCY")
                                     for b in overdue)
    assert esc(app, rid)["overdue"] == "1"

    # a nurse signs in on the dashboard and acknowledges it
    users.create(r, "nina", PASSWORD, "nurse")
    nurse = app.test_client()
    login = nurse.post("/dashboard/login", data={
        "username": "nina", "password": PASSWORD,
        "csrf_token": token(nurse, "/dashboard/login")})
    assert login.status_code == 303
    assert "EMERGENCY" in nurse.get("/dashboard/").get_data(as_text=True)
    csrf = token(nurse, f"/dashboard/escalations/{rid}")
    assert nurse.post(f"/dashboard/escalations/{rid}/ack",
                      data={"csrf_token": csrf}).status_code == 303
    assert escalations.status(r, rid) == "acknowledged"
    assert esc(app, rid)["acknowledged_by"] == "nina"
    [entry] = audit.entries(r, action="ack")
    assert entry["who"] == "nina" and entry["target"] == rid
    # every care-team page reads on the cluster
    for path in ("/dashboard/alarm.json", "/dashboard/queue.json", "/dashboard/overview",
                 "/dashboard/patients", f"/dashboard/patients/{phone.number}",
                 f"/dashboard/escalations/{rid}", "/dashboard/export.csv"):
        assert nurse.get(path).status_code == 200, path
    assert rid in nurse.get("/dashboard/queue.json").get_data(as_text=True)

    # the acknowledgement stops the re-pages and the calls
    sent, dialed = len(sms.sent), len(sms.dialed)
    for minutes in (31, 46, 61, 120):
        done = tick(app, t0 + minutes * MIN)
        assert done["overdue"] == 0 and done["pages"] == 0 and done["calls"] == 0
    assert (len(sms.sent), len(sms.dialed)) == (sent, dialed)

    # the API shows it acknowledged; a profile is saved through the API
    got = app.test_client().get("/api/escalations", query_string={"phone": phone.number},
                                headers=AUTH)
    assert got.status_code == 200, got.get_data(as_text=True)
    assert [(e["id"], e["status"]) for e in got.get_json()["escalations"]] == [
        (rid, "acknowledged")]
    put = app.test_client().put(f"/api/patients/{phone.number}", headers=AUTH,
                                json={"name": "Sam"})
    assert put.status_code == 200, put.get_data(as_text=True)
    assert r.sismember("{triage}:patients", phone.number)

    # resolved, then old: retention exports and removes it with its escalation's keys
    resolve = nurse.post(f"/dashboard/escalations/{rid}/resolve",
                         data={"csrf_token": csrf, "note": "called back, in the ED"})
    assert resolve.status_code == 303 and escalations.status(r, rid) == "resolved"
    tick(app, t0 + 401 * DAY)
    assert records(app) == [] and not r.exists(f"{{triage}}:esc:{rid}")
    folder = Path(app.instance_path) / "exports"
    exported = [json.loads(line) for path in sorted(folder.glob("records-*.jsonl"))
                for line in path.read_text().splitlines()]
    assert [x["id"] for x in exported] == [rid]
    only_tagged_keys(app.config["REDIS_URL"])


@pytest.mark.cluster
def test_a_raised_escalation_and_a_dead_letter_on_the_cluster(cluster_app: Any) -> None:
    app = cluster_app
    service = app.extensions["triage"]
    r = service.store.r
    sms = FakeBackend()
    app.extensions["sms"] = sms
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    patient = "+15557770001"

    def record(tier: str, flow: str, kind: str, reason: str) -> str:
        return service.store.append_record({
            "phone": patient, "flow": flow, "flows": [flow], "tier": tier, "kind": kind,
            "reasons": [reason], "answers": {}, "episode_id": "ep1", "conversation_id": "ep1",
            "created_at": stamp, "started_at": stamp})

    first = record("URGENT", "fever", "completed", "temperature 38.6 C >= 38.0")
    tick(app, now)
    assert len(sms.sent) == 2
    second = record("EMERGENCY", "red_flag", "red_flag", "can't breathe")
    r.xadd("{triage}:records", {"data": "not a record"})  # unreadable
    done = tick(app, now + 60)
    assert done["pages"] == 1
    # the conversation's escalation (its holder key in the slot of {triage}) is raised
    d = esc(app, first)
    assert d["escalation_tier"] == "EMERGENCY" and d["raised_by"] == second
    assert esc(app, second)["merged_into"] == first
    assert r.get(f"{{triage}}:escalation:{{{patient}}}:ep1") == first
    assert [b.split(",")[0] for _, b in sms.sent[2:]] == ["EMERGENCY (was URGENT)"] * 2
    # the unreadable entry is set aside, and the API lists it
    got = app.test_client().get("/api/deadletters", headers=AUTH).get_json()
    assert got["count"] == 1 and r.llen("{triage}:deadletter") == 1
    only_tagged_keys(app.config["REDIS_URL"])


def test_the_service_never_uses_one_servers_names_where_the_layout_decides() -> None:
    """A guard for code to come: outside ``keys.py``, no module of the service uses a
    service-wide key by its one-server name (a module constant or function imported by
    value, or ``module.NAME``); it asks the layout (``keys.of(r)``, ``store.names``). The one
    exception is the one-server branch of ``Store.commit``, which runs only on one server."""
    import ast

    layout_names = {n for n in keys.Layout.__slots__ if n.isupper()} | {
        n for n in vars(keys.Layout) if n.endswith("_key")}
    modules = {"keys", "store", "escalations", "esc_store", "paging", "voice", "followup",
               "indexes", "retention", "notify", "users", "profile", "audit"}
    root = Path(__file__).resolve().parent.parent / "bot"
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "keys.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.asname or a.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom)
                    for a in node.names if a.name in layout_names}
        allowed = [range(f.lineno, (f.end_lineno or f.lineno) + 1) for f in ast.walk(tree)
                   if path.name == "store.py" and isinstance(f, ast.FunctionDef)
                   and f.name == "commit"]
        for node in ast.walk(tree):
            bad = (isinstance(node, ast.Name) and node.id in imported
                   and isinstance(node.ctx, ast.Load)) or (
                isinstance(node, ast.Attribute) and node.attr in layout_names
                and isinstance(node.value, ast.Name) and node.value.id in modules)
            if bad and not any(node.lineno in lines for lines in allowed):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert found == []
