"""POST /sms: the signature, hostile input, duplicates, keywords, and Redis going away."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from twilio.twiml.messaging_response import MessagingResponse

from bot import create_app
from bot.sms import is_gsm7, segments
from bot.webhook import twiml_text
from conftest import BASE_URL, ONCOLOGY_LINE, Phone, records, replies, settings, sign


def form(**extra: str) -> dict[str, str]:
    base = {"From": "+15551230000", "To": "+15550009999", "Body": "hi",
            "MessageSid": "SM1", "AccountSid": "ACtest", "NumMedia": "0"}
    base.update(extra)
    return base


# ---------------------------------------------------------------- signature

def test_no_signature_is_403(client):
    assert client.post("/sms", data=form()).status_code == 403


def test_wrong_signature_is_403(client):
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", form(), token="not-the-token")}
    assert client.post("/sms", data=form(), headers=headers).status_code == 403


def test_signature_of_other_params_is_403(client):
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", form(Body="something else"))}
    assert client.post("/sms", data=form(), headers=headers).status_code == 403


def test_signature_for_another_url_is_403(client):
    headers = {"X-Twilio-Signature": sign("https://evil.example.org/sms", form())}
    assert client.post("/sms", data=form(), headers=headers).status_code == 403


def test_valid_signature_against_public_base_url(client):
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", form())}
    resp = client.post("/sms", data=form(), headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "text/xml"
    assert len(replies(resp.get_data(as_text=True))) == 1


def test_query_string_is_part_of_the_signed_url(client):
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms?clinic=north", form())}
    assert client.post("/sms?clinic=north", data=form(), headers=headers).status_code == 200
    assert client.post("/sms?clinic=south", data=form(), headers=headers).status_code == 403


def test_without_public_base_url_the_request_url_is_signed(redis_url, tmp_path):
    app = create_app(settings(redis_url, tmp_path, PUBLIC_BASE_URL=""))
    client = app.test_client()
    headers = {"X-Twilio-Signature": sign("http://localhost/sms", form())}
    assert client.post("/sms", data=form(), headers=headers).status_code == 200


def test_get_is_not_allowed(client):
    assert client.get("/sms").status_code == 405


# ---------------------------------------------------------------- hostile input

@pytest.mark.parametrize("body", [
    "", " ", "\n\n", "x" * 5000, "\U0001f912\U0001f912\U0001f912", "\u0000", "%FF%FE",
    "<script>alert(1)</script>", "38,5", "101F", "yes!!", "idk", "\u202e\u0635\u0628\u0627\u062d",
    "{{7*7}}", "'; DROP TABLE patients; --", "\ud7ff\ue000", "STOP" * 400,
])
def test_odd_bodies_get_a_clear_answer(phone, body):
    reply = phone.send(body)
    assert reply.strip()
    assert is_gsm7(reply) and segments(reply) <= 3


def test_photo_without_text(phone):
    phone.send("hi")
    reply = phone.send(None, NumMedia="1", MediaUrl0="https://api.twilio.com/x.jpg",
                       MediaContentType0="image/jpeg")
    assert "photos" in reply


def test_photo_on_first_contact_still_greets(phone):
    reply = phone.send(None, NumMedia="1")
    assert "Not for emergencies" in reply and "photos" in reply


def test_invalid_utf8_bytes(client):
    params = form(Body="%FF%FEabc")  # what werkzeug keeps of undecodable bytes
    raw = "From=%2B15551230000&To=%2B15550009999&Body=%FF%FEabc&MessageSid=SM9&AccountSid=" \
          "ACtest&NumMedia=0"
    params["MessageSid"] = "SM9"
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", params)}
    resp = client.post("/sms", data=raw.encode(), headers=headers,
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200
    assert replies(resp.get_data(as_text=True))


@pytest.mark.parametrize("missing", ["Body", "MessageSid", "NumMedia", "To", "AccountSid"])
def test_missing_fields(client, missing):
    params = form()
    del params[missing]
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", params)}
    resp = client.post("/sms", data=params, headers=headers)
    assert resp.status_code == 200
    assert replies(resp.get_data(as_text=True))


def test_missing_from(client):
    params = form()
    del params["From"]
    headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", params)}
    resp = client.post("/sms", data=params, headers=headers)
    assert resp.status_code == 200


def test_num_media_garbage(phone):
    assert phone.send("hi", NumMedia="lots")


def test_replies_are_escaped_twiml(phone):
    reply = phone.send("<Message>&</Message>")
    assert reply  # parsed as XML by replies(): nothing the patient typed broke the TwiML


@given(st.one_of(st.none(), st.text(), st.text(alphabet=st.sampled_from(
    [*"&<>\"' \r\n\t]]>", "\u00e9", "\u00a3", "\u0394", "\x00"]))))
@hyp_settings(max_examples=300, deadline=None)
def test_the_twiml_is_exactly_what_twilios_messaging_response_prints(text):
    """The webhook writes its TwiML from a template (issue 9, the hot path); twilio's own
    builder is the reference, on arbitrary text."""
    reference = MessagingResponse()
    if text:
        reference.message(text)
    assert twiml_text(text) == str(reference)


def test_every_patient_facing_text_is_the_same_twiml_as_twilio_builds(app):
    engine = app.extensions["triage"].engine
    texts = [engine.fill(m) for m in engine.msg.values() if isinstance(m, str)]
    texts += [rf.advice for rf in engine.lib.red_flags]
    assert len(texts) > 20
    for text in texts:
        reference = MessagingResponse()
        reference.message(text)
        assert twiml_text(text) == str(reference)


def test_a_signature_for_the_url_with_its_port_is_still_accepted(app):
    """Twilio may sign the URL with the port (https://host:443/sms): the fast check (the URL
    as configured) misses, and the library's full check accepts it."""
    client = app.test_client()
    params = {"From": "+15550001234", "Body": "hi", "MessageSid": "SMport1"}
    url = BASE_URL.rstrip("/")
    host = url.split("://", 1)[1]
    with_port = url.replace(host, host + (":443" if url.startswith("https") else ":80"))
    resp = client.post("/sms", data=params,
                       headers={"X-Twilio-Signature": sign(f"{with_port}/sms", params)})
    assert resp.status_code == 200
    bad = client.post("/sms", data=params, headers={"X-Twilio-Signature": "AAAA"})
    assert bad.status_code == 403


# ---------------------------------------------------------------- duplicates

def test_same_message_sid_twice_gives_same_reply_and_moves_nothing(app, phone):
    phone.send("fever")
    first = phone.post("no", sid="SMdup")
    second = phone.post("no", sid="SMdup")
    assert first.get_data() == second.get_data()
    session = app.extensions["triage"].store.session(phone.number)
    assert session["state"] == "asking" and session["at"] == "fever:temperature"
    assert "temperature" in replies(second.get_data(as_text=True))[0]
    inbound = [t for t in app.extensions["triage"].store.transcript(phone.number)
               if t["dir"] == "in"]
    assert [t["text"] for t in inbound] == ["fever", "no"]


def test_duplicate_outcome_is_recorded_once(app, phone):
    phone.send("fever")
    phone.send("no")
    phone.post("38.6", sid="SMsame")
    phone.post("38.6", sid="SMsame")
    assert len(records(app)) == 1


# ---------------------------------------------------------------- keywords

def test_first_contact_greeting_menu_and_emergency_line(phone):
    reply = phone.send("hello")
    assert reply.startswith("Hi,")
    assert "Not for emergencies: if you can't breathe, have chest pain, a seizure or heavy " \
           "bleeding, call 911" in reply
    assert "1 Fever" in reply


def test_menu_number_starts_a_checklist(phone):
    phone.send("hello")
    assert "ANY of these" in phone.send("1")


def test_free_text_is_routed(phone):
    assert "ANY of these" in phone.send("I think I have a fever")


def test_unknown_text_is_never_dropped(app, phone):
    """Words that match no checklist: call the care team today, and a nurse reads them."""
    phone.send("hello")
    reply = phone.send("purple monkey dishwasher")
    assert reply.startswith("Call the care team today") and "a nurse will read it" in reply
    rec = records(app)[0]
    assert rec["tier"] == "SOON" and rec["kind"] == "unrecognised" and rec["needs_reading"]
    assert "purple monkey dishwasher" in rec["reasons"][0]


def test_a_word_that_says_nothing_gets_the_menu(phone):
    phone.send("hello")
    reply = phone.send("hmm")
    assert "did not understand" in reply and "1 Fever" in reply


def test_help_keeps_the_question(phone):
    phone.send("fever")
    reply = phone.send("HELP")
    assert "911" in reply and "ANY of these" in reply


def test_menu_mid_checklist_records_abandonment(app, phone):
    phone.send("fever")
    phone.send("no")
    reply = phone.send("MENU")
    assert "1 Fever" in reply
    rec = records(app)[0]
    assert rec["kind"] == "abandoned" and "patient asked for the menu" in rec["reasons"][-1]


def test_stop_then_silence_then_start(app, phone):
    phone.send("fever")
    reply = phone.send("STOP")
    assert "no more texts" in reply
    assert phone.send("hello") == ""
    assert phone.send("38.9") == ""
    assert phone.send("yes") .startswith("Texts are on again")  # YES re-subscribes (Twilio)
    assert "1 Fever" in phone.send("menu")


@pytest.mark.parametrize("word", ["stop", "Stop", "STOP!", "unsubscribe", "cancel", "end",
                                  "quit", "stopall"])
def test_opt_out_words(phone, word):
    phone.send("hi")
    assert "no more texts" in phone.send(word)
    assert phone.send("hello") == ""
    assert "Texts are on again" in phone.send("START")


def test_stop_inside_a_sentence_is_not_opt_out(phone):
    phone.send("fever")
    reply = phone.send("how do I stop my nose from running")
    assert "no more texts" not in reply


def test_red_flag_after_stop_is_recorded_but_not_sent(app, phone):
    phone.send("hi")
    phone.send("STOP")
    assert phone.send("my son is having a seizure") == ""
    rec = records(app)[0]
    assert rec["tier"] == "EMERGENCY" and rec["kind"] == "red_flag_opted_out"


# ---------------------------------------------------------------- Redis down

@pytest.fixture
def app_without_redis(tmp_path):
    # a port nothing listens on: every Redis call fails
    return create_app(settings("redis://127.0.0.1:1/0", tmp_path))


def test_redis_down_still_answers_with_whom_to_call(app_without_redis):
    phone = Phone(app_without_redis.test_client())
    reply = phone.send("fever")
    assert f"call the 24-hour oncology line now at {ONCOLOGY_LINE}" in reply
    assert "911" in reply


def test_redis_down_red_flag_still_emergency(app_without_redis):
    phone = Phone(app_without_redis.test_client())
    assert phone.send("I cant breathe").startswith("Call 911 now.")


def test_healthz(client, app_without_redis):
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").get_json()["redis"] == "ok"
    resp = app_without_redis.test_client().get("/healthz")
    assert resp.status_code == 503 and resp.get_json()["redis"] == "down"


def test_signature_still_checked_when_redis_is_down(app_without_redis):
    resp = app_without_redis.test_client().post("/sms", data=form())
    assert resp.status_code == 403


def test_opt_out_outlives_the_session(app, phone):
    phone.send("hi")
    phone.send("STOP")
    store = app.extensions["triage"].store
    store.r.delete(f"triage:{{{phone.number}}}:session")  # 24 h of silence: session expired
    assert phone.send("hello") == ""
    assert "Texts are on again" in phone.send("START")
    store.r.delete(f"triage:{{{phone.number}}}:session")
    assert phone.send("hello").startswith("Hi,")
