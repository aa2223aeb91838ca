"""Installs anywhere, operates plainly: the compose file (schema-checked: Docker cannot run
here), the image's Dockerfile, both healthchecks run for real, .env.example against the
settings code, `serve` on a busy port, and `chat` against the wrong token or the wrong server."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml
from werkzeug.serving import make_server

from bot import config
from bot.cli import explain_status
from bot.worker import HEARTBEAT, check, run_forever
from conftest import free_port, make_app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


# ------------------------------------------------------------------ docker-compose.yml

def test_compose_file_is_valid_against_the_compose_schema() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)


def test_the_schema_check_notices_a_broken_file() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    broken = {**COMPOSE, "services": {**COMPOSE["services"],
                                      "web": {**COMPOSE["services"]["web"], "ports": "8000"}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_one_image_built_once_for_web_and_worker() -> None:
    web, worker = COMPOSE["services"]["web"], COMPOSE["services"]["worker"]
    builders = [name for name, svc in COMPOSE["services"].items() if "build" in svc]
    assert builders == ["web"]
    assert web["image"] == worker["image"]
    assert worker.get("pull_policy") == "never"  # never fetched from a registry: web built it
    assert worker["command"] == ["python", "-m", "bot.worker"]
    for svc in (web, worker):
        assert svc["env_file"] == ".env"
        assert svc["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_redis_is_not_published_and_web_only_on_loopback() -> None:
    assert "ports" not in COMPOSE["services"]["redis"]
    assert "ports" not in COMPOSE["services"]["worker"]
    ports = COMPOSE["services"]["web"]["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in COMPOSE["services"].items():
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    assert COMPOSE["services"]["worker"]["healthcheck"]["test"] == [
        "CMD", "python", "-m", "bot.worker", "--check"]


# ------------------------------------------------------------------ Dockerfile

def _final_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]


def test_image_is_built_from_the_wheel_and_runs_as_non_root() -> None:
    final = _final_stage()
    assert DOCKERFILE.count("\nFROM ") + DOCKERFILE.startswith("FROM ") >= 2  # multi-stage
    assert "pip wheel" in DOCKERFILE[:DOCKERFILE.rindex("\nFROM ")]
    assert "pip install --no-cache-dir /wheels/*.whl" in final
    # no source tree in the image that runs: only the installed wheel
    assert not re.search(r"^COPY (\./)?(bot|flows)\b", final, re.M)
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and users[-1] not in ("root", "0")
    config_path = re.search(r'"--config", "([^"]+)"', final).group(1)
    assert re.search(rf"^COPY gunicorn\.conf\.py {re.escape(config_path)}$", final, re.M)


def test_dockerfile_and_compose_check_web_health_the_same_way() -> None:
    cmd = re.search(r"HEALTHCHECK .*?CMD (\[[^\n]*\])\n", _final_stage(), re.S).group(1)
    assert json.loads(cmd) == COMPOSE["services"]["web"]["healthcheck"]["test"][1:]


@contextmanager
def serving(wsgi_app: Any) -> Iterator[int]:
    port = free_port()
    server = make_server("127.0.0.1", port, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _run(test: list[str], env: dict[str, str] | None = None, port: int | None = None
         ) -> subprocess.CompletedProcess[str]:
    """A compose healthcheck command run for real (python -> this interpreter)."""
    argv = [sys.executable if a == "python" else a for a in test[1:]]
    if port is not None:
        argv = [a.replace(":8000/", f":{port}/") for a in argv]
    return subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60, cwd="/")


def test_web_healthcheck_passes_on_a_healthy_app_and_fails_on_a_dead_port(app: Any) -> None:
    test = COMPOSE["services"]["web"]["healthcheck"]["test"]
    with serving(app) as port:
        assert _run(test, port=port).returncode == 0
    assert _run(test, port=free_port()).returncode != 0


def test_worker_writes_its_heartbeat_every_tick(app: Any) -> None:
    r = app.extensions["triage"].store.r
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(app, stop), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if r.get(HEARTBEAT):
                break
            time.sleep(0.025)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert abs(float(r.get(HEARTBEAT)) - time.time()) < 10


def test_worker_healthcheck_follows_the_heartbeat(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    test = COMPOSE["services"]["worker"]["healthcheck"]["test"]
    env = {"REDIS_URL": redis_url, "WORKER_TICK_SECONDS": "15"}
    missing = _run(test, env)
    assert missing.returncode == 1 and "no heartbeat" in missing.stdout
    r.set(HEARTBEAT, f"{time.time() - 5:.0f}")
    fresh = _run(test, env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    r.set(HEARTBEAT, f"{time.time() - 600:.0f}")
    stale = _run(test, env)
    assert stale.returncode == 1 and "last tick" in stale.stdout
    r.delete(HEARTBEAT)


def test_worker_check_when_redis_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    ok, message = check()
    assert not ok and "Redis does not answer" in message
    assert "127.0.0.1" not in message  # a URL can hold a password: never printed


# ------------------------------------------------------------------ .env.example

def _env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=value"
            assert key not in out, f".env.example: {key} twice"
            out[key] = value
    return out


def _names_read_by(path: Path) -> set[str]:
    """Setting names a module reads: env("X", ...), _int_("X", ...), environ.get("X"),
    os.getenv("X"), os.environ["X"]."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func, "value", None)
            owner_name = getattr(owner, "attr", None) or getattr(owner, "id", None)
            if name in ("env", "_int_", "getenv") or (name == "get" and owner_name == "environ"):
                names.add(node.args[0].value)
        if (isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) == "environ"
                and isinstance(node.slice, ast.Constant)):
            names.add(node.slice.value)
    # a WSGI request's environ (HTTP_* headers, wsgi.* keys) is not a setting
    return {n for n in names if isinstance(n, str) and n.isupper() and not n.startswith("HTTP_")}


def test_env_example_lists_exactly_the_settings() -> None:
    example = set(_env_example())
    settings = set(config.from_environment({}))
    assert example == settings, (f"missing from .env.example: {sorted(settings - example)}; "
                                 f"not settings: {sorted(example - settings)}")
    assert _names_read_by(ROOT / "bot" / "config.py") == settings


def test_no_module_reads_a_setting_env_example_does_not_list() -> None:
    example = set(_env_example())
    for path in sorted((ROOT / "bot").rglob("*.py")):
        unknown = _names_read_by(path) - example
        assert not unknown, f"{path.name} reads {sorted(unknown)}: add to config/.env.example"


def test_env_example_values_are_the_defaults() -> None:
    defaults = config.defaults()
    for key, value in _env_example().items():
        if value and key != "REDIS_URL":  # compose's Redis, not a default
            assert config.from_environment({key: value})[key] == defaults[key], key


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in config.from_environment({}):
        assert f"`{key}`" in readme, f"README does not document {key}"


# ------------------------------------------------------------------ serve and chat

def test_serve_on_a_busy_port_says_so_plainly(app: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = app.test_cli_runner().invoke(args=["serve", "--port", str(port),
                                                    "--no-worker"])
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    assert f"make run PORT={port + 1}" in result.output
    assert "Triage service on" not in result.output  # no misleading banner


def test_chat_with_the_wrong_token_explains_the_403_in_one_line(app: Any, redis_url: str,
                                                                tmp_path: Path) -> None:
    other = make_app(redis_url, tmp_path / "other", TWILIO_AUTH_TOKEN="a-different-token")
    with serving(app) as port:
        result = other.test_cli_runner().invoke(
            args=["chat", "--url", f"http://127.0.0.1:{port}/sms"], input="fever\n")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "HTTP 403" in line]
    assert len(lines) == 1 and "TWILIO_AUTH_TOKEN" in lines[0], result.output
    assert "<html" not in result.output.lower() and "<!doctype" not in result.output.lower()


def test_chat_signs_for_the_public_address_like_twilio(app: Any) -> None:
    """Server and chat share PUBLIC_BASE_URL (same .env): the chat signs for it."""
    with serving(app) as port:
        result = app.test_cli_runner().invoke(
            args=["chat", "--url", f"http://127.0.0.1:{port}/sms", "--phone", "+15550104444"],
            input="fever\nno\n38.6\n")
    assert result.exit_code == 0, result.output
    assert "bot> Call the 24-hour oncology line now" in result.output


def test_chat_to_something_else_says_wrong_server(app: Any) -> None:
    def not_ours(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("404 NOT FOUND", [("Content-Type", "text/html")])
        return [b"<!doctype html><title>404</title><h1>Not Found</h1>"]

    with serving(not_ours) as port:
        result = app.test_cli_runner().invoke(
            args=["chat", "--url", f"http://127.0.0.1:{port}/sms"], input="fever\n")
    assert result.exit_code == 1
    assert "not as this triage service: wrong server or port?" in result.output
    assert "<h1>" not in result.output


def test_other_refusals_are_one_line() -> None:
    for status in (404, 405, 501, 500):
        text = explain_status(status, "http://127.0.0.1:5000/sms")
        assert "\n" not in text and f"HTTP {status}" in text
    assert "wrong server" in explain_status(501, "u")


def test_make_run_takes_a_port() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "run", "PORT=5123"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, env=env)
    assert dry.returncode == 0, dry.stderr
    serve = [line for line in dry.stdout.splitlines() if " serve " in line]
    assert serve == [".venv/bin/flask --app wsgi serve --port 5123"], dry.stdout


def test_everything_the_dockerfile_copies_exists_and_is_sent_to_the_build() -> None:
    import fnmatch

    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ".env" in ignored and ".venv" in ignored  # secrets and local state stay out
    sources = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M):
        sources += line.split()[:-1]
    assert "bot" in " ".join(sources) and "flows" in " ".join(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not any(fnmatch.fnmatch(src.rstrip("/"), pat) for pat in ignored), src
