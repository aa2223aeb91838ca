"""Local use with no Redis installed and no Twilio account: the embedded redis-server under
instance/, dev secrets made once, and the terminal chat through the real signed webhook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot import create_app
from bot.cli import signed_post
from conftest import free_port


@pytest.fixture
def local_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for key in ("REDIS_URL", "TWILIO_AUTH_TOKEN", "SECRET_KEY", "CARE_TEAM_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    instance = tmp_path / "instance"
    app = create_app({"INSTANCE_PATH": str(instance), "REDIS_URL": None})
    yield app
    pid = (instance / "redis.pid").read_text().strip()
    os.kill(int(pid), signal.SIGTERM)


def test_embedded_redis_and_dev_secrets(local_app, tmp_path):
    instance = tmp_path / "instance"
    assert local_app.config["EMBEDDED_REDIS"] is True
    assert local_app.config["REDIS_URL"] == f"unix://{instance / 'redis.sock'}"
    assert local_app.extensions["triage"].store.ping()
    secrets = json.loads((instance / "dev-secrets.json").read_text())
    assert local_app.config["TWILIO_AUTH_TOKEN"] == secrets["TWILIO_AUTH_TOKEN"]
    assert oct((instance / "dev-secrets.json").stat().st_mode)[-3:] == "600"
    # append-only persistence is on, like production
    assert local_app.extensions["triage"].store.r.config_get("appendonly")["appendonly"] == "yes"
    # a second app (the worker, the chat) reuses the same server and the same secrets
    again = create_app({"INSTANCE_PATH": str(instance), "REDIS_URL": None})
    assert again.config["REDIS_URL"] == local_app.config["REDIS_URL"]
    assert again.config["TWILIO_AUTH_TOKEN"] == local_app.config["TWILIO_AUTH_TOKEN"]


def test_chat_command_in_process(local_app):
    runner = local_app.test_cli_runner()
    result = runner.invoke(args=["chat", "--phone", "+15550100077", "--url",
                                 "http://127.0.0.1:9/sms"],
                           input="fever\nno\n38.6\n")
    assert result.exit_code == 0, result.output
    assert "running the app in this process" in result.output
    assert "bot> Hi, this is your care team's symptom text line." in result.output
    assert "bot> Call the 24-hour oncology line now" in result.output


def test_serve_then_chat_over_http(tmp_path):
    """The README's flow: `flask --app wsgi serve`, then `flask --app wsgi chat` in another
    terminal, both with no REDIS_URL and no Twilio settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "TWILIO_AUTH_TOKEN", "SECRET_KEY", "CARE_TEAM_API_TOKEN",
                        "PUBLIC_BASE_URL")}
    env["INSTANCE_PATH"] = str(tmp_path / "instance")
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--port", str(port)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/sms"
        token = None
        for _ in range(100):
            secrets = tmp_path / "instance" / "dev-secrets.json"
            if secrets.exists():
                token = json.loads(secrets.read_text())["TWILIO_AUTH_TOKEN"]
                try:
                    status, _ = signed_post(f"http://127.0.0.1:{port}/healthz", token, {})
                    if status in (200, 405):
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        chat = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "chat", "--url", url,
             "--phone", "+15550100088"],
            cwd=root, env=env, input="temp 101.5F\nno\n", capture_output=True, text=True,
            timeout=60)
        assert chat.returncode == 0, chat.stderr
        assert "running the app in this process" not in chat.stdout
        assert "bot> Hi, this is your care team's symptom text line." in chat.stdout
        assert "Call the 24-hour oncology line now" in chat.stdout
    finally:
        server.terminate()
        out = server.communicate(timeout=10)[0]
        pid_file = tmp_path / "instance" / "redis.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    assert "Chat with it from another terminal" in out
    assert "+15550100088" not in out  # no phone number in the server's log
