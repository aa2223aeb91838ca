"""Issue 9 item 1 on a real 3-master Redis Cluster (scripts/redis_cluster.py): the webhook's
commit writes only the patient's slot, a message's records go through the patient's outbox
and are moved to ``{triage}:records`` exactly once, whatever point a process dies at; the worker
finds what is left through one small key per slot and relays it. Signed webhook requests
through the real app; crashes injected after a call reached Redis, and a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from bot import keys
from bot.store import Store, decode_record, meta_key, outbox_key, session_key
from bot.worker import tick
from conftest import AUTH_TOKEN, BASE_URL, Phone, flush_cluster

pytestmark = pytest.mark.cluster

CONVERSATION = ["fever", "no", "36.9", "no", "no", "no", "1", "no"]  # ends ROUTINE
RED_FLAG = "I cant breathe"
ROOT = Path(__file__).resolve().parent.parent


class Died(Exception):
    """The process 'dies' right after a call reached Redis."""


# The service-wide keys on a cluster: ``{triage}:records``, ``{triage}:status`` (keys.Layout)
RECORDS, STATUS = keys.CLUSTER.RECORDS, keys.CLUSTER.STATUS


def store_of(app: Any) -> Store:
    return app.extensions["triage"].store


def stream(app: Any) -> list[dict[str, Any]]:
    """Every record in ``{triage}:records``, oldest first, with its status hash entry."""
    r = store_of(app).r
    out = []
    for rid, fields in r.xrange(RECORDS):
        rec = decode_record(fields)
        out.append({"id": rid, "status_hash": r.hget(STATUS, rid), **rec})
    return out


def pending_members(app: Any, phone: str) -> list[str]:
    return store_of(app).r.zrange(keys.pending_key(phone), 0, -1)


def test_the_store_is_a_cluster_client_and_a_patients_writes_share_one_slot(
        cluster_app: Any) -> None:
    store = store_of(cluster_app)
    assert store.cluster and isinstance(store.r, redis.RedisCluster)
    assert isinstance(store.raw, redis.RedisCluster)
    phone = "+15550180001"
    slots = {key_slot(k.encode()) for k in (
        session_key(phone), meta_key(phone), outbox_key(phone), keys.pending_key(phone),
        keys.texts_key(phone), keys.optout_key(phone), keys.profile_key(phone))}
    assert len(slots) == 1
    # the per-slot tags: every slot has one, and it lands on its slot
    tags = keys.slot_tags()
    assert len(tags) == keys.SLOTS == 16384
    assert all(key_slot(keys.pending_key_of_slot(s).encode()) == s for s in range(0, 16384, 97))
    assert key_slot(keys.moved_key("x").encode()) == key_slot(RECORDS.encode())


def test_a_conversation_through_the_webhook_records_once_in_two_round_trips(
        cluster_app: Any, monkeypatch: Any) -> None:
    """Signed POSTs through the real app: every message that writes no record costs two
    round trips (socket writes, counted on every cluster connection); the one that writes a
    record is moved at once (two more calls: records and status in one script, then the
    outbox) and leaves no outbox behind."""
    phone = Phone(cluster_app.test_client())
    # first, a whole conversation: scripts loaded on the nodes, connections open
    assert phone.conversation(*CONVERSATION)[-1].startswith("You do not need to call")
    writes = Counter[str]()
    real_send = redis.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        writes["n"] += 1
        real_send(self, command, check_health)

    monkeypatch.setattr(redis.Connection, "send_packed_command", counting)
    trips = []
    replies = []
    for body in CONVERSATION:
        writes["n"] = 0
        replies.append(phone.send(body))
        trips.append(writes["n"])
    monkeypatch.setattr(redis.Connection, "send_packed_command", real_send)
    assert replies[-1].startswith("You do not need to call right now")
    assert trips[:-1] == [2] * (len(CONVERSATION) - 1), trips
    assert trips[-1] == 4, trips  # read, commit, then move (record and status), outbox cleared
    got = stream(cluster_app)
    assert [(r["tier"], r["kind"], r["status_hash"]) for r in got] == [
        ("ROUTINE", "completed", "open")] * 2
    assert {r["phone"] for r in got} == {phone.number}
    assert store_of(cluster_app).r.exists(outbox_key(phone.number)) == 0
    assert pending_members(cluster_app, phone.number) == []  # checklist over, outbox empty
    # Twilio's retry of a MessageSid: the same reply, nothing written
    first = phone.send(RED_FLAG, sid="SMretry1")
    assert first.startswith("Call 911 now.")
    assert phone.send(RED_FLAG, sid="SMretry1") == first
    assert [r["tier"] for r in stream(cluster_app)] == ["ROUTINE", "ROUTINE", "EMERGENCY"]
    # the care team's reads see them (status from the hash)
    assert [r["tier"] for r in store_of(cluster_app).records()] == [
        "EMERGENCY", "ROUTINE", "ROUTINE"]
    transcript = store_of(cluster_app).transcript(phone.number)
    assert [t["text"] for t in transcript if t["dir"] == "in"][-2:] == ["no", RED_FLAG]


def test_a_stale_commit_is_refused_on_the_cluster_too(cluster_app: Any) -> None:
    store = store_of(cluster_app)
    svc = cluster_app.extensions["triage"]
    phone = Phone(cluster_app.test_client())
    phone.send("fever")
    now = time.time() + 60
    stale = store.read(phone.number, "SMa", now)
    phone.send("no")
    result = svc.engine.handle(stale.session, "yes", now=now, phone=phone.number,
                               profile=svc._context_from({}, now))
    assert result.records  # "yes" to the danger signs: an EMERGENCY record, refused
    assert store.commit(phone.number, "SMa", stale, result, "yes", now) is None
    assert store.session(phone.number)["at"] == "fever:temperature"
    assert stream(cluster_app) == [] and store.outbox(phone.number) == []


def test_a_crash_after_the_commit_leaves_the_record_in_the_outbox_and_the_worker_moves_it(
        cluster_app: Any, monkeypatch: Any) -> None:
    svc = cluster_app.extensions["triage"]
    store = store_of(cluster_app)
    phone = Phone(cluster_app.test_client())
    real = Store._commit

    def commit_then_die(self: Any, *a: Any, **kw: Any) -> Any:
        real(self, *a, **kw)
        raise Died

    monkeypatch.setattr(Store, "_commit", commit_then_die)
    with pytest.raises(Died):
        svc.handle_sms(phone.number, "SMc1", RED_FLAG)
    monkeypatch.setattr(Store, "_commit", real)
    # committed in the patient's slot: the outbox holds the record, the stream not yet
    assert stream(cluster_app) == []
    assert [e[1] for e in store.outbox(phone.number)] == ["open"]
    assert pending_members(cluster_app, phone.number) == ["o" + phone.number]
    # Twilio's retry: the cached reply, no second record
    assert phone.send(RED_FLAG, sid="SMc1").startswith("Call 911 now.")
    assert len(store.outbox(phone.number)) == 1
    # the worker's tick relays it, once; a second tick adds nothing
    done = tick(cluster_app, time.time())
    assert done["relayed"] == 1
    assert [(r["tier"], r["status_hash"]) for r in stream(cluster_app)] == [
        ("EMERGENCY", "open")]
    assert store.outbox(phone.number) == [] and pending_members(cluster_app, phone.number) == []
    assert tick(cluster_app, time.time())["relayed"] == 0
    assert len(stream(cluster_app)) == 1


@pytest.mark.parametrize(("dies_in", "reached"), [
    ("_move", False), ("_move", True), ("_moved", False), ("_moved", True)])
def test_a_crash_inside_the_move_never_doubles_a_record(cluster_app: Any, monkeypatch: Any,
                                                        dies_in: str, reached: bool) -> None:
    """The move (record added, marker set) or the outbox cleanup fails before or after it
    reached Redis: the message is answered anyway (its records are committed), the relay
    completes what is left, and moving again (relay twice) finds the marker."""
    svc = cluster_app.extensions["triage"]
    store = store_of(cluster_app)
    phone = Phone(cluster_app.test_client())
    real = getattr(Store, dies_in)

    def die(self: Any, *a: Any, **kw: Any) -> Any:
        if reached:
            real(self, *a, **kw)
        raise redis.ConnectionError("the connection broke")

    monkeypatch.setattr(Store, dies_in, die)
    saved = svc.handle_sms(phone.number, "SMm1", RED_FLAG)
    monkeypatch.setattr(Store, dies_in, real)
    assert saved.reply.startswith("Call 911 now.")
    assert [r["tier"] for r in saved.records] == ["EMERGENCY"]
    assert "id" not in saved.records[0]  # not known here: the worker completes the move
    got = stream(cluster_app)
    assert len(got) == (0 if dies_in == "_move" and not reached else 1)
    if got:
        assert got[0]["status_hash"] == "open"  # written with the record, in one script
        # a nurse acknowledges it meanwhile (from the stream): the relay must not reopen it
        store.r.hset(STATUS, got[0]["id"], "acknowledged")
    left = 0 if dies_in == "_moved" and reached else 1
    assert len(store.outbox(phone.number)) == left
    assert store.relay_outboxes() == left
    assert store.relay_outboxes() == 0
    after = stream(cluster_app)
    assert len(after) == 1 and after[0]["tier"] == "EMERGENCY"
    assert after[0]["status_hash"] == ("acknowledged" if got else "open")
    assert store.outbox(phone.number) == [] and pending_members(cluster_app, phone.number) == []


def test_two_movers_at_once_add_each_record_once(cluster_app: Any, monkeypatch: Any) -> None:
    svc = cluster_app.extensions["triage"]
    store = store_of(cluster_app)
    phones = [Phone(cluster_app.test_client()) for _ in range(5)]
    monkeypatch.setattr(Store, "_move", lambda self, entries: (_ for _ in ()).throw(
        redis.ConnectionError("down")))
    for p in phones:  # every message's own move fails: five outboxes, one record each
        svc.handle_sms(p.number, None, RED_FLAG)
    monkeypatch.undo()
    assert stream(cluster_app) == []
    other = Store.from_url(cluster_app.config["REDIS_URL"], cluster=True, session_ttl=60,
                           dedup_ttl=60)
    moved: list[int] = []
    barrier = threading.Barrier(2)

    def relay(s: Store) -> None:
        barrier.wait()
        moved.append(s.relay_outboxes())

    threads = [threading.Thread(target=relay, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = stream(cluster_app)
    assert sorted(r["phone"] for r in got) == sorted(p.number for p in phones)
    assert all(r["status_hash"] == "open" for r in got)
    assert all(store.outbox(p.number) == [] for p in phones)


def test_the_abandon_sweep_and_the_tick_on_the_cluster(cluster_app: Any, caplog: Any) -> None:
    """The in-flight mark lives in the patient's slot (the pending set); the worker finds
    it by reading every slot's set, sweeps the checklist into an 'abandoned' record, moves
    it, and the pager reads every record in the same tick (none of these pages)."""
    store = store_of(cluster_app)
    t0 = time.time()
    phones = [Phone(cluster_app.test_client()) for _ in range(3)]
    for p in phones[:2]:
        p.conversation("fever", "no")  # a question pending
    phones[2].conversation(*CONVERSATION)  # finished: not in flight
    assert pending_members(cluster_app, phones[0].number) == ["a" + phones[0].number]
    assert set(store.stale_inflight(t0 + 16 * 60)) == {phones[0].number, phones[1].number}
    assert store.stale_inflight(t0 - 60) == []
    done = tick(cluster_app, t0 + 16 * 60)
    assert done["abandoned"] == 2 and done["pages"] == 0 and done["records"] == 3
    kinds = Counter((r["phone"], r["kind"]) for r in stream(cluster_app))
    assert kinds == Counter({(phones[0].number, "abandoned"): 1,
                             (phones[1].number, "abandoned"): 1,
                             (phones[2].number, "completed"): 1})
    # the patient stays on the question (a late answer goes on), recorded once; no outbox
    assert pending_members(cluster_app, phones[0].number) == ["a" + phones[0].number]
    assert pending_members(cluster_app, phones[2].number) == []
    assert "ERROR" not in caplog.text
    assert tick(cluster_app, t0 + 40 * 60)["abandoned"] == 0
    assert len(stream(cluster_app)) == 3


def test_a_cluster_service_is_allowed_outside_local_use() -> None:
    """The pager works on a cluster (tests/test_cluster_paging.py): production may use one."""
    from bot import config

    settings = {"REDIS_URL": "redis://x", "TWILIO_AUTH_TOKEN": "t", "SECRET_KEY": "s",
                "CARE_TEAM_API_TOKEN": "a", "ONCOLOGY_LINE_NUMBER": "+1 555 010 0100",
                "CARE_TEAM_NUMBER": "+1 555 010 0200", "ON_CALL_NUMBERS": "+15550001111"}
    config.check_production(settings)
    config.check_production({**settings, "REDIS_CLUSTER": True})
    with pytest.raises(config.StartupRefused, match="ON_CALL_NUMBERS"):  # still checked
        config.check_production({**settings, "REDIS_CLUSTER": True, "ON_CALL_NUMBERS": ""})
    assert config.from_environment({"REDIS_CLUSTER": "1"})["REDIS_CLUSTER"] is True
    assert config.from_environment({})["REDIS_CLUSTER"] is False


_LOOP = textwrap.dedent("""
    import sys
    from bot import create_app
    app = create_app({"REDIS_URL": sys.argv[1], "REDIS_CLUSTER": True, "APP_ENV": "local",
                      "INSTANCE_PATH": sys.argv[2], "TWILIO_AUTH_TOKEN": sys.argv[3],
                      "SECRET_KEY": "k", "CARE_TEAM_API_TOKEN": "a",
                      "PUBLIC_BASE_URL": sys.argv[4], "RATE_LIMIT_TEXTS": 0})
    svc = app.extensions["triage"]
    for i in range(100000):
        phone = f"+1555019{i:04d}"
        print(phone, flush=True)
        svc.handle_sms(phone, f"SMk{i}", "I cant breathe")
""")


def test_sigkill_at_any_point_loses_no_record_and_doubles_none(cluster_app: Any,
                                                              tmp_path: Path) -> None:
    """A real process writing one record per message, SIGKILLed mid-stream (three times, at
    different moments): after the worker's relay every message that committed has exactly
    one record in ``triage:records`` and none that did not commit has one."""
    store = store_of(cluster_app)
    url = cluster_app.config["REDIS_URL"]
    flush_cluster(url)
    started: list[str] = []
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP.replace("+1555019", f"+155501{9 - round_}"), url,
             str(tmp_path / f"i{round_}"), AUTH_TOKEN, BASE_URL],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "LOG_LEVEL": "WARNING"})
        assert proc.stdout is not None
        for _ in range(25 + 20 * round_):  # let it run a while, then kill it mid-message
            line = proc.stdout.readline()
            assert line, "the message loop stopped by itself"
            started.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        started.extend(x.strip() for x in proc.stdout.read().splitlines())
        proc.stdout.close()
    store.relay_outboxes()
    per_phone = Counter(r["phone"] for r in stream(cluster_app))
    committed = [p for p in started if store.raw.hlen(meta_key(p))]
    assert len(committed) >= len(started) - 3  # at most the message each kill interrupted
    assert {p: per_phone[p] for p in committed} == {p: 1 for p in committed}
    assert set(per_phone) == set(committed)
    assert all(store.outbox(p) == [] for p in started)
    assert all(s == "open" for s in store.r.hvals(STATUS))


def test_the_slot_scan_reads_a_slot_again_when_its_master_changed(cluster_app: Any,
                                                                  monkeypatch: Any) -> None:
    """Resharding: the scan sends a slot's read to the master the client last knew; a MOVED
    answer is read again through the cluster client, so no mark is missed."""
    store = store_of(cluster_app)
    phones = [Phone(cluster_app.test_client()) for _ in range(6)]
    for p in phones:
        p.send("fever")
    manager = store.r.nodes_manager
    first = manager.get_node_from_slot(0)
    assert {manager.get_node_from_slot(key_slot(p.number.encode())).name
            for p in phones} - {first.name}  # some patients live on the other masters
    monkeypatch.setattr(Store, "_slot_owners", lambda self: [(first, list(range(keys.SLOTS)))])
    assert set(store.stale_inflight(time.time() + 1)) == {p.number for p in phones}


def test_the_app_starts_while_the_cluster_is_unreachable_and_connects_when_it_answers(
        cluster_url: str, tmp_path: Path, monkeypatch: Any) -> None:
    """redis-py's cluster client connects when it is made: made while the cluster does not
    answer, the app still starts (as with one server down), the webhook answers with the
    fallback (the text spooled), and the first use after the cluster answers connects."""
    from bot import create_app
    from bot.breaker import Breaker
    from bot.store import LateCluster
    from conftest import settings

    flush_cluster(cluster_url)
    real = redis.RedisCluster.from_url.__func__  # type: ignore[attr-defined]

    def unreachable(cls: Any, url: str, **kw: Any) -> Any:
        return real(cls, "redis://127.0.0.1:1", **kw)  # nothing listens there

    monkeypatch.setattr(redis.RedisCluster, "from_url", classmethod(unreachable))
    app = create_app(settings(cluster_url, tmp_path, REDIS_CLUSTER=True))
    store = store_of(app)
    assert store.cluster and isinstance(store.r, LateCluster)
    phone = Phone(app.test_client())
    assert phone.send(RED_FLAG).startswith("Call 911 now.")  # the fallback, Redis unreachable
    assert app.test_client().get("/healthz").status_code == 503
    monkeypatch.undo()  # the cluster answers again
    store.r._next = store.raw._next = 0.0  # (its retry pace: at most one try a second)
    app.extensions["triage"].breaker = Breaker()
    assert store.ping()
    # the text kept on disk during the outage goes through the engine and the outbox now
    assert app.extensions["triage"].replay_spool() == 1
    got = stream(app)
    assert [(r["tier"], r["phone"], r.get("received_during_outage")) for r in got] == [
        ("EMERGENCY", phone.number, True)]
    assert got[0]["status_hash"] == "open" and store.outbox(phone.number) == []


def test_a_cluster_that_stops_answering_gets_the_fallback_not_an_error(
        tmp_path: Path) -> None:
    """The cluster goes away under a running app (its own cluster, stopped for real): the
    webhook answers with the fallback and /healthz says down, as with one server."""
    from bot import create_app
    from conftest import settings

    sys.path.insert(0, str(ROOT / "scripts"))
    import redis_cluster

    folder = tmp_path / "gone"
    url = redis_cluster.start(folder)
    try:
        app = create_app(settings(url, tmp_path, REDIS_CLUSTER=True))
        phone = Phone(app.test_client())
        assert phone.send("fever").startswith("Hi, this is your care team")
    finally:
        redis_cluster.stop(folder)
    assert phone.send(RED_FLAG).startswith("Call 911 now.")
    assert app.test_client().get("/healthz").status_code == 503
    assert app.extensions["triage"].spool.pending()  # kept for when it answers again


def test_the_worker_check_reads_the_heartbeat_on_the_cluster(cluster_app: Any,
                                                             monkeypatch: Any) -> None:
    """``python -m bot.worker --check`` given a node that does not hold the heartbeat key:
    the cluster client follows the redirection, a plain client would be told MOVED."""
    from bot.worker import HEARTBEAT, check

    r = store_of(cluster_app).r
    r.set(HEARTBEAT, f"{time.time():.0f}")
    holder = r.get_node_from_key(HEARTBEAT)
    other = next(n for n in r.get_primaries() if n.name != holder.name)
    monkeypatch.setenv("REDIS_URL", f"redis://{other.host}:{other.port}/0")
    monkeypatch.setenv("REDIS_CLUSTER", "1")
    ok, message = check()
    assert ok, message
    monkeypatch.setenv("REDIS_CLUSTER", "")
    ok, message = check()
    assert not ok and "MovedError" in message
