"""Two messages from one patient at the same moment: nothing lost, nothing corrupted.

A real threaded HTTP server, real signed requests from several threads released together by a
barrier, and a real Redis: the session ends as one of the serial orders would leave it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from bot.cli import reply_texts, signed_post
from conftest import AUTH_TOKEN, free_port


@pytest.fixture
def live(app: Any) -> Iterator[str]:
    port = free_port()
    app.config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/sms"
    server.shutdown()


def send_together(url: str, number: str, bodies: list[str]) -> list[tuple[int, str]]:
    barrier = threading.Barrier(len(bodies))
    results: list[Any] = [None] * len(bodies)

    def go(i: int, body: str) -> None:
        form = {"From": number, "To": "+15550009999", "Body": body, "NumMedia": "0",
                "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "ACtest"}
        barrier.wait()
        results[i] = signed_post(url, AUTH_TOKEN, form)

    threads = [threading.Thread(target=go, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def post_one(url: str, number: str, body: str) -> str:
    form = {"From": number, "To": "+15550009999", "Body": body, "NumMedia": "0",
            "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "ACtest"}
    status, text = signed_post(url, AUTH_TOKEN, form)
    assert status == 200
    return text


def new_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def serial_outcomes(app: Any, url: str, prefix: list[str], pair: list[str]) -> list[Any]:
    """The sessions the two serial orders leave (answers compared without raw texts)."""
    out = []
    for order in (pair, pair[::-1]):
        number = new_number()
        for body in prefix + order:
            post_one(url, number, body)
        out.append(normalised(app.extensions["triage"].store.session(number)))
    return out


def normalised(session: dict[str, Any]) -> Any:
    conv = session["conv"]
    answers = {k: v["value"] for k, v in conv["answers"].items()}
    return session["state"], session.get("at"), answers, conv.get("retries", {})


def test_two_answers_at_the_same_moment(app, live):
    prefix = ["fever"]
    pair = ["no", "idk"]
    expected = serial_outcomes(app, live, prefix, pair)
    assert expected[0] != expected[1]  # the order matters, so a lost answer would show
    for _ in range(15):
        number = new_number()
        for body in prefix:
            post_one(live, number, body)
        results = send_together(live, number, pair)
        assert all(status == 200 for status, _ in results), results
        assert all(reply_texts(body) for _, body in results)
        session = app.extensions["triage"].store.session(number)
        assert normalised(session) in expected
        inbound = [t["text"] for t in app.extensions["triage"].store.transcript(number)
                   if t["dir"] == "in"]
        assert sorted(inbound) == sorted(prefix + pair)


def test_many_messages_at_once_none_lost(app, live):
    number = "+15557770000"
    bodies = [f"hello {i}" for i in range(12)]
    results = send_together(live, number, bodies)
    assert [status for status, _ in results] == [200] * len(bodies)
    transcript = app.extensions["triage"].store.transcript(number)
    assert sorted(t["text"] for t in transcript if t["dir"] == "in") == sorted(bodies)
    assert len([t for t in transcript if t["dir"] == "out"]) == len(bodies)
    # exactly one first contact: the greeting went out once, the rest got the menu
    greetings = [t for t in transcript if t["dir"] == "out" and t["text"].startswith("Hi,")]
    assert len(greetings) == 1


def test_same_sid_concurrently_moves_once(app, live):
    number = "+15557770001"
    post_one(live, number, "fever")
    form_sid = "SM" + uuid.uuid4().hex
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def go() -> None:
        form = {"From": number, "To": "+15550009999", "Body": "no", "NumMedia": "0",
                "MessageSid": form_sid, "AccountSid": "ACtest"}
        barrier.wait()
        results.append(signed_post(live, AUTH_TOKEN, form))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len({body for _, body in results}) == 1
    session = app.extensions["triage"].store.session(number)
    assert session["state"] == "asking" and session["at"] == "fever:temperature"
    inbound = [t for t in app.extensions["triage"].store.transcript(number) if t["dir"] == "in"]
    assert [t["text"] for t in inbound] == ["fever", "no"]
