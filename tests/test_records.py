"""Triage records: completed, abandoned (silence, MENU, STOP) and red flags; ROUTINE too."""

from __future__ import annotations

import time

from conftest import records


def test_silence_after_a_worrying_answer_becomes_an_abandoned_record(app, phone):
    service = app.extensions["triage"]
    start = time.time() - 3600
    for i, text in enumerate(["fever", "no", "37.7", "no"]):
        service.handle_sms(phone.number, None, text, now=start + i)
    assert records(app) == []
    written = service.sweep_abandoned(now=start + 14 * 60)
    assert written == []  # not yet: 15 minutes of silence
    written = service.sweep_abandoned(now=start + 16 * 60)
    assert len(written) == 1
    rec = records(app)[0]
    assert rec["kind"] == "abandoned" and rec["tier"] == "SOON"
    assert rec["answers"]["temperature"] == "37.7"
    assert "checklist abandoned" in rec["reasons"][-1]
    # recorded once, however often the sweeper runs
    assert service.sweep_abandoned(now=start + 30 * 60) == []
    assert len(records(app)) == 1


def test_a_finished_checklist_is_never_swept(app, phone):
    service = app.extensions["triage"]
    start = time.time() - 3600
    for i, text in enumerate(["fever", "no", "38.5"]):
        service.handle_sms(phone.number, None, text, now=start + i)
    assert service.sweep_abandoned(now=start + 20 * 60) == []
    assert [r["kind"] for r in records(app)] == ["completed"]


def test_coming_back_after_abandonment_finishes_the_checklist(app, phone):
    service = app.extensions["triage"]
    start = time.time() - 3600
    for i, text in enumerate(["fever", "no"]):
        service.handle_sms(phone.number, None, text, now=start + i)
    service.sweep_abandoned(now=start + 20 * 60)
    reply = service.handle_sms(phone.number, None, "38.4", now=start + 21 * 60).reply
    assert reply.startswith("Call the 24-hour oncology line now")
    assert [r["kind"] for r in records(app)] == ["completed", "abandoned"]


def test_stop_mid_checklist_records_abandonment(app, phone):
    phone.send("fever")
    phone.send("no")
    phone.send("STOP")
    assert records(app)[0]["kind"] == "abandoned"


def test_the_transcript_keeps_both_directions(app, phone):
    phone.send("fever")
    transcript = app.extensions["triage"].store.transcript(phone.number)
    assert [t["dir"] for t in transcript] == ["in", "out"]
    assert transcript[0]["text"] == "fever" and "ANY of these" in transcript[1]["text"]


def test_no_phone_number_in_logs(app, phone, caplog):
    caplog.set_level("DEBUG")
    phone.send("fever")
    phone.send("no")
    phone.send("38.9")
    phone.send("I can't breathe")
    assert caplog.records
    assert phone.number not in caplog.text
    assert phone.number[1:] not in caplog.text


# -- the stored form (store.encode_record / decode_record; issue 9, memory per record)

def test_records_are_stored_compressed_and_read_back_exactly(app, phone):
    import json

    from bot.store import decode_record

    for text in ("fever", "no", "38.6", "no", "no", "yes"):
        phone.send(text)
    phone.send("No I can't breathe")
    store = app.extensions["triage"].store
    entries = store.r.xrange(store.names.RECORDS)  # triage:records ({triage}: on a cluster)
    assert len(entries) >= 2
    for rid, fields in entries:
        stored = fields["data"]
        assert stored.startswith("z1")  # compressed, and still text for every client
        rec = decode_record(fields)
        assert rec["phone"] == phone.number and store.record(rid)["tier"] == rec["tier"]
        plain = json.dumps(rec, separators=(",", ":"))
        assert len(stored) < len(plain) * 0.5, (len(stored), len(plain))
    assert "EMERGENCY" in {r["tier"] for r in records(app)}


def test_records_written_as_plain_json_before_still_read(app):
    import json

    from bot.store import decode_record, encode_record

    old = {"phone": "+15550001234", "tier": "URGENT", "flow": "fever", "kind": "completed",
           "conversation_id": "c1", "created_at": "2026-11-20T10:00:00Z", "status": "open"}
    r = app.extensions["triage"].store.r
    names = app.extensions["triage"].store.names  # the service-wide keys of this deployment
    RECORDS, STATUS = names.RECORDS, names.STATUS
    rid = r.xadd(RECORDS, {"data": json.dumps(old)})
    r.hset(STATUS, rid, "open")
    assert decode_record(r.xrange(RECORDS, min=rid, max=rid)[0][1]) == old
    assert app.extensions["triage"].store.record(rid)["tier"] == "URGENT"
    # a tiny record stays JSON when compressing would not make it shorter
    assert encode_record({"a": 1}) == '{"a":1}'


def test_a_damaged_compressed_record_is_an_error_never_a_guess():
    import pytest

    from bot.store import decode_record, encode_record

    good = encode_record({"phone": "+15550001234", "tier": "EMERGENCY", "reasons": ["x" * 50]})
    for bad in (good[:-6] + "!!!!!!", good[:20], "z1" + "A" * 40):
        with pytest.raises(ValueError):
            decode_record({"data": bad})


def test_what_patients_write_round_trips_exactly_in_records_and_sessions(app):
    """Records and sessions are written with orjson (UTF-8, not \\u escapes) and read back
    exactly, whatever a patient typed; keys that are not strings become strings, as json's
    would; a record or session written by json before reads the same."""
    import json

    from bot.store import decode_record, dumps, encode_record

    rec = {"phone": "+15550001234", "tier": "URGENT",
           "quotes": {"bleeding": "nose 🩸 “won’t stop” é"},
           "answers": {1: "x", "t": 38.5, "n": None, "big": 10**15, "tiny": 1e-7}}
    expected = json.loads(json.dumps(rec))
    assert decode_record({"data": encode_record(rec)}) == expected
    assert json.loads(dumps(rec)) == expected
    assert decode_record({"data": json.dumps(rec)}) == expected
    store = app.extensions["triage"].store
    session = {"state": "bleeding:where", "conv": {"quotes": {"x": "🩸 ça “saigne”"}}}
    assert store._session_of(store.codec.encode(dumps(session))) == session
    assert store._session_of(store.codec.encode(json.dumps(session))) == session
