"""Issue 8, items 1, 2, 3, 5, 6: faults injected for real (SIGKILL of gunicorn workers and of
redis-server, SIGSTOP of redis-server, a crash between the commit and the reply, a corrupt
record, a worker killed mid-page). The kill tests are the short forms of
``python scripts/kill_test.py`` (docs/reliability.md has the full runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from test_dashboard import PASSWORD, login

from bot.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from bot.paging import DEAD_LETTERS, DUE, EMERGENCY_LEASE_SECONDS
from bot.spool import Spool
from bot.store import RECORDS, Store
from bot.worker import HEARTBEAT, SILENT_AFTER, tick
from conftest import WORKER_SETTINGS, Phone, free_port, redis_server_binary, settings

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("kill_test", ROOT / "scripts" / "kill_test.py")
assert _spec and _spec.loader
kill_test = importlib.util.module_from_spec(_spec)
sys.modules["kill_test"] = kill_test  # dataclasses look their module up
_spec.loader.exec_module(kill_test)

RED_FLAG = "I cant breathe"
APP_SETTINGS = WORKER_SETTINGS  # on-call numbers: EMERGENCY records are paged


def emergencies(app: Any) -> list[dict[str, Any]]:
    return app.extensions["triage"].store.records(tiers=("EMERGENCY",))


# ------------------------------------------------------------------ item 1: no lost record

class CrashAfterCommit(Exception):
    """The process 'dies' after the commit reached Redis, before the reply left."""


def test_a_crash_after_the_commit_loses_nothing_and_a_retry_writes_nothing_twice(app: Any,
                                                                                 phone: Phone,
                                                                                 monkeypatch: Any
                                                                                 ) -> None:
    store: Store = app.extensions["triage"].store
    real = Store._commit

    def commit_then_die(self: Any, *a: Any, **kw: Any) -> Any:
        real(self, *a, **kw)  # the message's one commit script reaches Redis...
        raise CrashAfterCommit  # ...and the process dies before replying

    monkeypatch.setattr(Store, "_commit", commit_then_die)
    with pytest.raises(CrashAfterCommit):
        app.extensions["triage"].handle_sms(phone.number, "SMcrash1", RED_FLAG)
    monkeypatch.setattr(Store, "_commit", real)
    # committed: the record is already there, with its session and its MessageSid reply
    assert [r["phone"] for r in emergencies(app)] == [phone.number]
    # Twilio's retry of the same MessageSid: the same reply, no second record
    assert phone.send(RED_FLAG, sid="SMcrash1").startswith("Call 911 now.")
    assert len(emergencies(app)) == 1
    assert store.r.xlen(RECORDS) == 1


def test_a_crash_before_the_commit_leaves_nothing_and_the_retry_writes_the_record(
        app: Any, phone: Phone, monkeypatch: Any) -> None:
    def die(self: Any, *a: Any, **kw: Any) -> Any:
        raise CrashAfterCommit  # before the commit: nothing of this message reached Redis

    real = Store._commit
    monkeypatch.setattr(Store, "_commit", die)
    with pytest.raises(CrashAfterCommit):
        app.extensions["triage"].handle_sms(phone.number, "SMcrash2", RED_FLAG)
    monkeypatch.setattr(Store, "_commit", real)
    assert emergencies(app) == []
    assert app.extensions["triage"].store.session(phone.number) is None
    assert phone.send(RED_FLAG, sid="SMcrash2").startswith("Call 911 now.")
    assert len(emergencies(app)) == 1


def test_kill_gunicorn_workers_under_red_flag_load_short(tmp_path: Path) -> None:
    """Short form of `python scripts/kill_test.py worker-kill`: real gunicorn (the project's
    config, 3 workers), real Redis, SIGKILL at random moments, retries with the same
    MessageSid: EMERGENCY records == 'Call 911 now.' replies."""
    out = kill_test.worker_kill(messages=120, threads=6, folder=tmp_path, max_kills=6,
                                every=(0.3, 0.6), spacing=0.2, pager_kills=1, raised=10)
    assert out["sigkills"] >= 3, out
    # the real worker (python -m bot.worker), SIGKILLed once while paging, restarted: every
    # escalation paged to each on-call number exactly once at EMERGENCY (the 10 URGENT ones
    # raised in place included), no (escalation, number, tier) twice
    assert out["pages_sent"] == out["pages_expected"] == 2 * (out["texts"] + 10), out
    assert out["raised_escalations"] == 10 and out["pages_duplicated"] == 0, out
    assert kill_test.verdict(out) == [], out
    assert out["emergency_records"] == out["told_call_911"] == out["texts"], out


# ------------------------------------------------------------------ item 2: bounded latency

def test_breaker_opens_fails_fast_and_probes_once() -> None:
    now = [0.0]
    b = Breaker(cooldown=5.0, clock=lambda: now[0])
    assert b.allow() and b.state == CLOSED
    b.failure()
    assert b.state == OPEN and not b.allow()
    now[0] = 5.1
    assert b.allow() and b.state == HALF_OPEN  # the probe
    assert not b.allow()                        # everyone else still fails fast
    b.failure()
    assert b.state == OPEN and not b.allow()
    now[0] = 10.3
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    """A redis-server of this test's own, to stop and kill."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.025)
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(timeout=10)


def test_sigstopped_redis_every_reply_within_3_s_then_spooled_texts_replayed(
        own_redis: Any, tmp_path: Path) -> None:
    from bot import create_app

    proc, url = own_redis
    app = create_app(settings(url, tmp_path))
    svc = app.extensions["triage"]
    svc.breaker.cooldown = 0.5
    client = app.test_client()
    patient, other = Phone(client), Phone(client)
    patient.send("fever")  # a conversation under way
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        timings = []
        for p, body in [(patient, RED_FLAG), (other, RED_FLAG), (other, "fever"),
                        (patient, "yes")]:
            started = time.monotonic()
            resp = p.post(body)
            timings.append(time.monotonic() - started)
            assert resp.status_code == 200
        assert max(timings) < 3.0, timings
        assert timings[1] < 0.2, timings  # the breaker is open: no socket touched
        assert svc.spool.count() == 4
        with pytest.raises(redis.TimeoutError):
            redis.Redis.from_url(url, socket_timeout=0.2).ping()  # still stalled
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    time.sleep(0.6)  # the breaker's cooldown: the next message is its probe
    Phone(client).send("hello")
    deadline = time.monotonic() + 10
    while svc.spool.count() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert svc.spool.count() == 0
    found = {r["phone"]: r for r in emergencies(app)}
    assert set(found) == {patient.number, other.number}
    assert all(r["received_during_outage"] is True for r in found.values())
    # replayed once: a second replay (or Twilio retrying the same MessageSids) adds nothing
    assert svc.replay_spool() == 0
    assert len(emergencies(app)) == 2


def test_redis_stall_under_gunicorn_short(tmp_path: Path) -> None:
    """Short form of `python scripts/kill_test.py redis-stall`."""
    out = kill_test.redis_stall(messages=60, threads=4, stall=3.0, folder=tmp_path)
    assert kill_test.verdict(out, kill_test.REPLY_LIMIT) == [], out
    assert out["records_from_outage_spool"] >= 1, out
    assert out["left_after_service_replay"] == 0, out


def test_yes_to_the_emergency_question_under_a_stall_gunicorn_short(tmp_path: Path) -> None:
    """Short form of `python scripts/kill_test.py stall-pending`: real gunicorn, redis-server
    SIGSTOPped, each conversation answers "yes" to the emergency-signs question carrying the
    cookie its last reply set: "Call 911 now.", then its record after the replay."""
    out = kill_test.stall_pending(patients=8, threads=4, folder=tmp_path)
    assert out["cookies_set"] == out["told_call_911"] == 8, out
    assert out["emergency_records_after_replay"] == 8, out
    assert out["lost"] == out["duplicated"] == out["http_5xx"] == 0, out


# ------------------------------------------------------------------ item 3: the spool

def test_spool_is_replayed_once_and_kept_when_redis_fails_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(3):
        spool.append(f"+1555000000{i}", f"SM{i}", RED_FLAG, 0, 1000.0 + i)
    assert spool.count() == 3
    seen: list[str] = []

    def flaky(entry: dict[str, Any]) -> None:
        if entry["sid"] == "SM1" and "SM1" not in seen:
            seen.append("SM1")
            raise OSError("redis went away again")
        seen.append(entry["sid"])

    with pytest.raises(OSError):
        spool.replay(flaky)
    assert spool.count() == 3  # nothing dropped: the claimed file is kept
    spool.append("+15550000009", "SM9", RED_FLAG, 0, 2000.0)  # written meanwhile
    assert spool.replay(flaky) == 4
    assert spool.count() == 0 and not spool.pending()
    assert seen == ["SM0", "SM1", "SM0", "SM1", "SM2", "SM9"]  # again, in order (idempotent)


def test_pending_sees_a_text_spooled_by_another_process_after_it_was_listed_empty(
        tmp_path: Path) -> None:
    """``pending`` lists the folder only when its time changed; a text spooled by another
    process (another Spool on the same folder) after this one saw it empty is still seen,
    at once, however old the folder was."""
    folder = tmp_path / "spool"
    web, other = Spool(folder), Spool(folder)
    assert not web.pending()  # no folder yet
    folder.mkdir()
    os.utime(folder, ns=(time.time_ns() - 5 * 10**9,) * 2)  # listed long after it changed
    (folder / "replay.lock").touch()
    os.utime(folder, ns=(time.time_ns() - 5 * 10**9,) * 2)
    assert not web.pending() and not web.pending()  # the second answer from the stat alone
    assert web._empty_since is not None
    other.append("+15550000001", "SMa", RED_FLAG, 0, 1.0)
    assert web.pending()
    assert other.replay(lambda entry: None) == 1
    assert not web.pending()
    # a folder changed within the last second is listed every time, never remembered empty
    fresh = Spool(tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    assert not fresh.pending() and fresh._empty_since is None
    fresh.append("+15550000002", "SMb", RED_FLAG, 0, 2.0)
    assert fresh.pending()


def test_a_text_the_engine_cannot_replay_is_set_aside_not_blocking(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append("+15550000001", "SMa", "x", 0, 1.0)
    spool.append("+15550000002", "SMb", "y", 0, 2.0)

    def handle(entry: dict[str, Any]) -> None:
        if entry["sid"] == "SMa":
            raise ValueError("a bug")

    assert spool.replay(handle) == 1
    assert spool.unreplayable() == 1 and not spool.pending()


def test_redis_killed_under_load_aof_always_nothing_answered_is_lost_short(tmp_path: Path
                                                                            ) -> None:
    """Items 3 and 6, short form of `python scripts/kill_test.py redis-kill`: redis-server
    (appendfsync always) SIGKILLed under load, down 2 s, restarted on its files."""
    out = kill_test.redis_kill(messages=60, threads=4, down=2.0, folder=tmp_path)
    assert kill_test.verdict(out, kill_test.REPLY_LIMIT) == [], out
    assert out["records_from_outage_spool"] >= 1, out
    assert out["emergency_records"] - out["records_from_outage_spool"] >= \
        (out["records_seen_just_before_kill"] or 0), out


# ------------------------------------------------------------------ item 5: the worker

def test_healthz_and_banner_show_a_silent_worker(app: Any, client: Any) -> None:
    from bot import users

    r = app.extensions["triage"].store.r
    body = client.get("/healthz").get_json()
    assert body["worker_silent"] is True and "worker_silent" in body["alarms"]
    r.set(HEARTBEAT, f"{time.time():.0f}")
    body = client.get("/healthz").get_json()
    assert body["worker_silent"] is False and body["status"] == "ok", body
    r.set(HEARTBEAT, f"{time.time() - SILENT_AFTER - 5:.0f}")
    body = client.get("/healthz").get_json()
    assert body["worker_silent"] is True and body["status"] == "degraded"
    users.create(r, "nina", PASSWORD, "nurse")
    assert login(client, "nina").status_code == 303
    html = client.get("/dashboard/").get_data(as_text=True)
    assert 'id="system-banner"' in html and "NOT being sent" in html
    r.set(HEARTBEAT, f"{time.time():.0f}")
    assert 'id="system-banner"' not in client.get("/dashboard/").get_data(as_text=True)


def test_a_corrupt_record_is_dead_lettered_and_raises_an_alarm(app: Any, client: Any,
                                                               sms: Any) -> None:
    r = app.extensions["triage"].store.r
    r.xadd(RECORDS, {"data": "{not json"})
    tick(app)
    letters = [json.loads(x) for x in r.lrange(DEAD_LETTERS, 0, -1)]
    assert len(letters) == 1 and letters[0]["fields"]["data"] == "{not json"
    body = client.get("/healthz").get_json()
    assert body["dead_letters"] == 1 and "dead_letters" in body["alarms"]


def test_emergency_page_lease_is_short_and_a_killed_sender_texts_no_number_twice(
        app: Any, phone: Phone, sms: Any) -> None:
    from conftest import ON_CALL

    r = app.extensions["triage"].store.r
    phone.send(RED_FLAG)
    t0 = time.time()
    real_send = sms.send

    def die_on_second(to: str, body: str, status_callback: str | None = None) -> str:
        if to == ON_CALL[1]:
            raise SystemExit("worker killed mid-page")
        return real_send(to, body, status_callback)

    sms.send = die_on_second
    with pytest.raises(SystemExit):
        tick(app, t0)
    rid = emergencies(app)[0]["id"]
    lease_until = r.zscore(DUE, rid)
    assert lease_until == pytest.approx(t0 + EMERGENCY_LEASE_SECONDS)  # not 120 s
    assert sms.to(ON_CALL[0]) and not sms.to(ON_CALL[1])
    sms.send = real_send
    tick(app, t0 + EMERGENCY_LEASE_SECONDS + 1)  # another worker takes the page over
    assert len(sms.to(ON_CALL[0])) == 1 and len(sms.to(ON_CALL[1])) == 1  # no duplicate


# ------------------------------------------------------------------ item 6: durability stated

def test_compose_redis_fsyncs_every_write_and_the_spool_is_on_a_volume() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendfsync") + 1] == "always"
    assert command[command.index("--appendonly") + 1] == "yes"
    for name in ("web", "worker"):
        svc = compose["services"][name]
        spool = svc["environment"]["SPOOL_DIR"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert any(spool.startswith(path) for path in mounts), (name, spool, mounts)
        assert all(m in compose["volumes"] for m in mounts.values())


# ------------------------------------------------------------------ item 4: pages a phone can bear

def test_a_red_flag_flood_from_one_conversation_pages_each_number_once(app: Any, phone: Phone,
                                                                        sms: Any) -> None:
    from bot import escalations
    from conftest import ON_CALL

    r = app.extensions["triage"].store.r
    for _ in range(25):
        assert phone.send(RED_FLAG).startswith("Call 911 now.")  # always honoured
    recs = emergencies(app)
    assert len(recs) >= 2  # every red flag still recorded
    t0 = time.time()
    tick(app, t0)
    assert [len(sms.to(n)) for n in ON_CALL] == [1, 1]
    first = min(recs, key=lambda rec: rec["id"])["id"]
    merged = [rec["id"] for rec in recs if rec["id"] != first]
    assert all(escalations.details(r, rid)["merged_into"] == first for rid in merged)
    assert all(escalations.details(r, rid)["page_status"] == "merged" for rid in merged)
    # once the paged one is acknowledged, a new red flag is a new page
    escalations.acknowledge(r, first, "nina", t0)
    phone.send(RED_FLAG)
    tick(app, t0 + 1)
    assert [len(sms.to(n)) for n in ON_CALL] == [2, 2]
