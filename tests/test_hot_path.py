"""Issue 9 items 1 and 3, issue 8 item 4: a message costs two Redis round trips (counted on the
socket), an idle patient costs under 2 KB of Redis, and one number's flood is throttled while
its red flags are still answered and recorded. Real Redis, real signed webhook requests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.service import THROTTLED_REPLY
from bot.store import (
    RECORDS,
    RateLimit,
    Store,
    append_sent_text,
    dedup_key,
    meta_key,
    texts_key,
    transcript_key,
)
from bot.textcodec import Codec, build_dictionary
from conftest import CARE_TEAM, Phone, records

CONVERSATION = ["fever", "no", "36.9", "no", "no", "no", "1", "no"]


class Counting(redis.Connection):
    """A connection that counts every write to its socket: one per round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.writes += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(app: Any, redis_url: str) -> Any:
    store: Store = app.extensions["triage"].store
    store.r = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, connection_class=Counting, decode_responses=True))
    store.ping()
    store.raw.ping()  # both pools connected before counting

    def trips(phone: Phone, body: str) -> tuple[int, str]:
        Counting.writes = 0
        reply = phone.send(body)
        return Counting.writes, reply
    return trips


def test_two_round_trips_for_a_plain_answer_and_for_one_that_writes_a_record(
        app: Any, phone: Phone, counted: Any) -> None:
    counted(phone, "hello")  # the scripts are loaded (the first EVALSHA may meet NOSCRIPT)
    for body in CONVERSATION[:-1]:
        n, reply = counted(phone, body)
        assert n <= 2, (body, n, reply)
    n, reply = counted(phone, CONVERSATION[-1])  # ends the checklist: a ROUTINE record
    assert reply.startswith("You do not need to call right now")
    assert n <= 2, n
    assert [r["tier"] for r in records(app)] == ["ROUTINE"]
    n, reply = counted(phone, "I cant breathe")  # a red flag: an EMERGENCY record
    assert reply.startswith("Call 911 now.") and n <= 2, n
    assert sorted(r["tier"] for r in records(app)) == ["EMERGENCY", "ROUTINE"]
    # Twilio's retry of a MessageSid: one round trip, the same reply, nothing written
    sid = "SM" + "7" * 32
    first = phone.send("fever", sid=sid)
    Counting.writes = 0
    assert phone.send("fever", sid=sid) == first
    assert Counting.writes == 1


def test_commands_per_message_from_commandstats(app: Any, phone: Phone, counted: Any) -> None:
    r = app.extensions["triage"].store.r
    phone.send("hello")

    def calls() -> dict[str, int]:
        return {k: v["calls"] for k, v in r.info("commandstats").items()}

    before = calls()
    for body in CONVERSATION:
        phone.send(body)
    after = calls()
    sent = {k: n - before.get(k, 0) for k, n in after.items()
            if k != "cmdstat_info" and n != before.get(k, 0)}
    # the client sent two scripts a message; everything else ran inside them
    assert sent["cmdstat_evalsha"] == 2 * len(CONVERSATION), sent
    assert sum(sent.values()) / len(CONVERSATION) <= 20, sent  # inner commands included


def test_noscript_is_handled(app: Any, phone: Phone) -> None:
    store: Store = app.extensions["triage"].store
    phone.send("fever")
    store.raw.script_flush()  # a Redis restarted without its script cache
    assert phone.send("no").startswith("What is your temperature?")
    assert store.session(phone.number)["at"] == "fever:temperature"


def test_a_commit_after_another_message_of_the_patient_is_refused_and_the_step_reruns(
        app: Any, phone: Phone) -> None:
    store: Store = app.extensions["triage"].store
    svc = app.extensions["triage"]
    phone.send("fever")
    now = time.time() + 60  # after the texts sent below in real time (the transcript's order)
    stale = store.read(phone.number, "SMa", now)
    phone.send("no")  # another message of the same patient commits meanwhile
    result = svc.engine.handle(stale.session, "yes", now=now, phone=phone.number,
                               profile=svc._context_from({}, now))
    assert store.commit(phone.number, "SMa", stale, result, "yes", now) is None
    assert store.session(phone.number)["at"] == "fever:temperature"  # not overwritten
    assert not records(app)  # and the stale step's record was not written
    # the service's own loop: read again, step again, commit
    real_read = store.read
    calls: list[int] = []

    def read_then_race(*a: Any, **kw: Any) -> Any:
        snap = real_read(*a, **kw)
        if not calls:
            calls.append(1)
            store.commit(phone.number, None, real_read(phone.number, None, now),
                         svc.engine.handle(snap.session, "38.9", now=now, phone=phone.number,
                                           profile=svc._context_from({}, now)), "38.9", now)
        return snap

    store.read = read_then_race  # type: ignore[method-assign]
    try:
        saved = svc.handle_sms(phone.number, "SMb", "no", now=now)
    finally:
        store.read = real_read  # type: ignore[method-assign]
    # 38.9 was committed first; "no" then answered the question after the temperature
    transcript = [t["text"] for t in store.transcript(phone.number) if t["dir"] == "in"]
    assert transcript[-2:] == ["38.9", "no"]
    assert saved.reply and saved.state == store.session(phone.number)["state"]


def test_an_idle_patient_costs_under_2_kb_and_the_transcript_keeps_its_shape(
        app: Any, phone: Phone) -> None:
    store: Store = app.extensions["triage"].store
    replies = phone.conversation(*CONVERSATION)
    keys = list(store.r.scan_iter(match=f"*{{{phone.number}}}*"))
    used = {k: store.r.memory_usage(k, samples=0) for k in keys}
    assert sum(used.values()) <= 2048, used
    transcript = store.transcript(phone.number)
    assert [t["dir"] for t in transcript] == ["in", "out"] * len(CONVERSATION)
    assert [t["text"] for t in transcript[::2]] == CONVERSATION
    assert [t["text"] for t in transcript[1::2]] == replies
    assert all(set(t) == {"id", "dir", "text", "at"} for t in transcript)
    assert all(abs(float(t["at"]) - time.time()) < 60 for t in transcript)
    # every MessageSid's reply is still there for Twilio's retries
    meta = store.raw.hgetall(meta_key(phone.number))
    assert len([k for k in meta if k.startswith(b"d")]) == len(CONVERSATION)


def test_older_transcript_entries_and_dedup_keys_still_read(app: Any, phone: Phone) -> None:
    store: Store = app.extensions["triage"].store
    # written before issue 9 (and by notify.text_patient): a stream in the long form
    store.r.xadd(transcript_key(phone.number), {"dir": "out", "text": "Earlier text",
                                                "at": f"{time.time() - 60:.3f}"})
    store.r.set(dedup_key(phone.number, "SMold"), json.dumps({"reply": "Old reply"}))
    phone.send("fever")
    texts = store.transcript(phone.number)
    assert [t["text"] for t in texts][:2] == ["Earlier text", "fever"]
    assert phone.send("anything", sid="SMold") == "Old reply"  # a retry across the upgrade


def store_with_other_rules(store: Store, tmp_path: Any) -> Store:
    """The same Redis, through a process whose flow files (and so text dictionary) differ."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "m.yaml").write_text("a: some other sentence of the clinical rules\n")
    return Store(store.r, session_ttl=60, dedup_ttl=60,
                 codec=Codec(build_dictionary(tmp_path / "flows")))


def test_texts_from_a_process_with_other_rules_read_through_the_dictionary_in_redis(
        app: Any, phone: Phone, tmp_path: Any) -> None:
    store: Store = app.extensions["triage"].store
    phone.send("fever")
    other = store_with_other_rules(store, tmp_path)
    assert other.codec.id != store.codec.id
    assert "ANY of these" in other.transcript(phone.number)[1]["text"]
    assert other.session(phone.number)["at"] == "fever:danger_signs"


# ------------------------------------------------------------------ the per-number rate limit

APP_SETTINGS = {"RATE_LIMIT_TEXTS": 20, "RATE_LIMIT_WINDOW_SECONDS": 600}


def test_a_flood_of_100_texts_is_throttled_but_red_flags_are_answered_and_recorded(
        app: Any, phone: Phone) -> None:
    store: Store = app.extensions["triage"].store
    sent, got = [], []
    for i in range(100):
        body = "I cant breathe" if i % 10 == 9 else f"hello again {i}"
        sent.append(body)
        got.append(phone.send(body))
    flags = [i for i, b in enumerate(sent) if b == "I cant breathe"]
    assert all(got[i].startswith("Call 911 now.") for i in flags)
    emergencies = [r for r in records(app) if r["tier"] == "EMERGENCY"]
    assert len(emergencies) >= 1  # recorded (repeats merge into the open conversation)
    # past the 20th text, a text with no red flag gets no engine turn: one short reply in
    # the window, then nothing
    over = [i for i in range(20, 100) if i not in flags]
    throttled = [got[i] for i in over]
    notice = THROTTLED_REPLY.format(care_team=CARE_TEAM)
    assert throttled[0] == notice
    assert all(t == "" for t in throttled[1:]), throttled
    assert len(notice) <= 160 and notice.isascii()  # one GSM-7 segment
    # every text is kept for the care team, throttled or not
    inbound = [t["text"] for t in store.transcript(phone.number) if t["dir"] == "in"]
    assert inbound == sent


def test_the_limit_does_not_cut_a_pending_question_and_resets_after_the_window(
        app: Any, phone: Phone) -> None:
    svc = app.extensions["triage"]
    assert svc.rate_limit == RateLimit(20, 600)
    t0 = time.time()
    for i in range(20):
        svc.handle_sms(phone.number, f"SMf{i}", f"hello {i}", now=t0 + i)
    assert svc.handle_sms(phone.number, "SMx", "fever", now=t0 + 21).throttled
    # a checklist already under way still gets its answers (one may be the EMERGENCY one)
    svc.store.raw.delete(meta_key(phone.number))
    for i in range(20):
        svc.handle_sms(phone.number, f"SMg{i}", f"hello {i}", now=t0 + 30 + i)
    svc.store.raw.hset(meta_key(phone.number), "rn", 0)
    svc.handle_sms(phone.number, "SMh", "fever", now=t0 + 51)
    svc.store.raw.hset(meta_key(phone.number), "rn", 40)
    saved = svc.handle_sms(phone.number, "SMi", "yes", now=t0 + 52)
    assert not saved.throttled and saved.reply.startswith("Call 911 now.")
    assert [r["tier"] for r in records(app)] == ["EMERGENCY"]
    # STOP is always honoured; an opted-out number is never sent the notice
    assert not svc.handle_sms(phone.number, "SMj", "STOP", now=t0 + 53).throttled
    quiet = svc.handle_sms(phone.number, "SMk", "hello", now=t0 + 54)
    assert quiet.throttled and quiet.reply is None
    # a new window: the engine again
    later = svc.handle_sms(phone.number, "SMl", "START", now=t0 + 700)
    assert not later.throttled
    assert not svc.handle_sms(phone.number, "SMm", "hello", now=t0 + 701).throttled


def test_the_dedup_entries_of_a_number_are_capped(app: Any, phone: Phone) -> None:
    from bot.store import DEDUP_CAP

    svc = app.extensions["triage"]
    svc.rate_limit = None
    t0 = time.time()
    for i in range(DEDUP_CAP + 10):
        svc.handle_sms(phone.number, f"SMcap{i:03d}", "hello", now=t0 + i)
    meta = svc.store.raw.hgetall(meta_key(phone.number))
    sids = [k for k in meta if k.startswith(b"d")]
    assert len(sids) <= DEDUP_CAP
    # the newest are kept: a retry of the last text is still recognised
    assert svc.handle_sms(phone.number, f"SMcap{DEDUP_CAP + 9:03d}", "hello",
                          now=t0 + 999).duplicate
    assert svc.store.r.xlen(RECORDS) == 0
    assert svc.store.r.llen(texts_key(phone.number)) == 2 * (DEDUP_CAP + 10)


def test_a_text_sent_outside_a_message_joins_the_compact_transcript(app: Any,
                                                                    phone: Phone) -> None:
    store: Store = app.extensions["triage"].store
    phone.send("fever")
    append_sent_text(store.r, phone.number, "How is the fever now? Reply 1, 2 or 3.",
                     time.time() + 1)
    texts = store.transcript(phone.number)
    assert [t["dir"] for t in texts] == ["in", "out", "out"]
    assert texts[-1]["text"] == "How is the fever now? Reply 1, 2 or 3."


def test_a_retried_message_gives_the_same_reply_and_state_and_counts_once(app: Any,
                                                                          phone: Phone) -> None:
    svc = app.extensions["triage"]
    t0 = time.time()
    first = svc.handle_sms(phone.number, "SMr1", "fever", now=t0)
    again = svc.handle_sms(phone.number, "SMr1", "fever", now=t0 + 5)
    assert again.duplicate and again.reply == first.reply
    assert again.state == first.state == "asking" and first.pending == "fever:danger_signs"
    assert svc.store.raw.hget(meta_key(phone.number), "rn") == b"1"  # counted once
    # a throttled text's retry: the same (empty) answer, no second notice
    saved = [svc.handle_sms(phone.number, f"SMq{i}", "hello", now=t0 + 10 + i)
             for i in range(40)]
    assert saved[-1].throttled and saved[-1].reply is None
    quiet = svc.handle_sms(phone.number, "SMq39", "hello", now=t0 + 60)
    assert quiet.duplicate and quiet.reply is None
    count = svc.store.raw.hget(meta_key(phone.number), "rn")
    assert count == b"41"  # the retry was not counted


def test_a_lost_dictionary_costs_the_conversation_not_the_line(app: Any, phone: Phone,
                                                               tmp_path: Any) -> None:
    from bot.textcodec import dict_key

    store: Store = app.extensions["triage"].store
    phone.send("fever")
    other = store_with_other_rules(store, tmp_path)
    store.raw.delete(dict_key(store.codec.id))  # gone from Redis, unknown to this process
    assert other.session(phone.number) is None  # a fresh conversation, not an error
    assert other.transcript(phone.number)[1]["text"].startswith("[unreadable")
    assert other.transcript(phone.number)[0]["text"] == "fever"  # the patient's own words


def test_replies_are_compressed_once_and_read_back_exactly(tmp_path: Path) -> None:
    """``Codec.encode_reply`` gives ``encode``'s bytes, decodes to the text, and keeps at most
    REPLIES_KEPT short replies (a long or a new text past the cap is still encoded)."""
    from bot import textcodec

    codec = Codec(build_dictionary(Path(__file__).resolve().parent.parent / "flows"))
    text = "Do you have any of these now: chills, shaking, confusion? Reply YES or NO."
    assert codec.encode_reply(text) == codec.encode(text) == codec.encode_reply(text)
    assert codec.decode(codec.encode_reply(text)) == text
    long = "x" * (textcodec.REPLY_CHARS + 1)
    assert codec.decode(codec.encode_reply(long)) == long
    for n in range(textcodec.REPLIES_KEPT + 10):
        assert codec.decode(codec.encode_reply(f"reply {n}")) == f"reply {n}"
    assert len(codec._replies) == textcodec.REPLIES_KEPT
    assert long not in codec._replies


# ------------------------------------------- the hot line: the scripts on kept connections

def test_a_connection_redis_closed_is_replaced_at_once(app: Any, phone: Phone) -> None:
    """Redis closed the hot line's connection (a restart, a client timeout, CLIENT KILL): the
    next message reconnects once, immediately, and is answered as if nothing happened."""
    store: Store = app.extensions["triage"].store
    phone.send("fever")
    assert store._hot is not None and store._hot._idle  # a connection kept for the next one
    store.r.client_kill_filter(_type="normal", skipme=True)  # every other client's socket
    assert phone.send("no").startswith("What is your temperature?")
    assert store.session(phone.number)["at"] == "fever:temperature"


def test_a_failed_call_never_leaves_a_reply_behind_for_the_next(app: Any, tmp_path: Path,
                                                                redis_url: str) -> None:
    """A call that failed midway (here a timeout: Redis stopped answering) must not leave its
    late reply on a connection that a later call reads: the connection is dropped, and the
    next call, for another patient, gets its own answer."""
    import os
    import signal
    import subprocess

    from conftest import free_port, redis_server_binary

    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(200):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        store = Store.from_url(url, socket_timeout=0.3, session_ttl=3600, dedup_ttl=3600)
        now = time.time()
        first = store.read("+15550000001", "SMa", now)
        assert first.session is None
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(redis.TimeoutError):
                store.read("+15550000001", "SMb", now)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # Redis answers the stalled call now; that late reply must never be read as this one
        store.r.hset(meta_key("+15550000002"), "v", "7")
        again = store.read("+15550000002", "SMc", now)
        assert again.version == "7" and again.cached is None
        assert store._hot is not None and len(store._hot._idle) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_forked_child_never_shares_the_parents_connection(app: Any, phone: Phone) -> None:
    """gunicorn forks its workers from the master: a child must take its own connection, or
    two processes would read each other's replies on one socket."""
    import os

    store: Store = app.extensions["triage"].store
    phone.send("fever")
    parent_conn = store._hot._idle[-1] if store._hot else None
    assert parent_conn is not None
    pid = os.fork()
    if pid == 0:  # the child: one message of its own, then exit with the verdict
        ok = False
        try:
            phone.send("no")
            ok = (store._hot is not None and parent_conn not in store._hot._idle
                  and store.session(phone.number)["at"] == "fever:temperature")
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's kept connection still works, and reads the child's commit
    assert store._hot._idle == [parent_conn]
    assert store.read(phone.number, "SMz", time.time()).session["at"] == "fever:temperature"
