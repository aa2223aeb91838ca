"""Property-based: no sequence of arbitrary texts ever produces a 500, an empty reply (except
to an opted-out number), a reply over 3 segments, or a character outside GSM-7."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.sms import is_gsm7, segments
from conftest import BASE_URL, replies, sign

WORDS = ["fever", "yes", "no", "YES!!", "idk", "1", "2", "3", "4", "9", "menu", "MENU", "help",
         "STOP", "START", "restart", "38.6", "37.9", "38,5", "101F", "100.4 degrees", "none",
         "no thermometer", "2 and 3", "cough", "I think I have a fever", "temp 38.9",
         "\U0001f912", "\U0001f44d", "", " ", "cant breathe", "no chest pain", "maybe",
         "\u2019", "x" * 3000, "<script>alert(1)</script>", "very unwell", "35.9", "96.8F",
         "bleeding", "my face is swollen", "CAR-T", "confused", "0", "-1", "1e9", "NaN"]

texts = st.one_of(st.sampled_from(WORDS), st.text(max_size=200),
                  st.text(alphabet=st.characters(codec="ascii"), max_size=30))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=st.lists(texts, min_size=1, max_size=14),
       media=st.lists(st.booleans(), min_size=14, max_size=14))
def test_no_sequence_breaks_the_service(client, app, bodies, media):
    number = "+1555" + str(uuid.uuid4().int)[:7]
    for body, photo in zip(bodies, media, strict=False):
        form = {"From": number, "To": "+15550009999", "Body": body,
                "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "ACtest",
                "NumMedia": "1" if photo else "0"}
        resp = client.post("/sms", data=form,
                           headers={"X-Twilio-Signature": sign(f"{BASE_URL}/sms", form)})
        assert resp.status_code == 200, body
        texts_out = replies(resp.get_data(as_text=True))
        session = app.extensions["triage"].store.session(number)
        if session["state"] == "opted_out":
            assert len(texts_out) <= 1  # the opt-out confirmation, then silence
            continue
        assert len(texts_out) == 1, body
        reply = texts_out[0]
        assert reply.strip(), body
        assert is_gsm7(reply), (body, reply)
        assert segments(reply) <= 3, (body, reply)
