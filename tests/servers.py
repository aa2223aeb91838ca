"""Real servers for tests: gunicorn with the project's gunicorn.conf.py, configured as in
production (REDIS_URL, secrets, the numbers patients are told to call, on-call numbers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import API_TOKEN, AUTH_TOKEN, CARE_TEAM, ONCOLOGY_LINE, free_port

ROOT = Path(__file__).resolve().parent.parent


def production_env(redis_url: str, instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "APP_ENV"}
    env.update({"REDIS_URL": redis_url, "INSTANCE_PATH": str(instance),
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SECRET_KEY": "test-secret-key",
                "CARE_TEAM_API_TOKEN": API_TOKEN, "ONCOLOGY_LINE_NUMBER": ONCOLOGY_LINE,
                "CARE_TEAM_NUMBER": CARE_TEAM, "ON_CALL_NUMBERS": "+15550001111",
                "TWILIO_ACCOUNT_SID": "", "TWILIO_FROM_NUMBER": "", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()]


def get(url: str, **kw: Any) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10, **kw) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextmanager
def gunicorn(tmp_path: Path, redis_url: str, **extra: str) -> Iterator[Server]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    env = production_env(redis_url, tmp_path / "instance", PUBLIC_BASE_URL=base, **extra)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--workers", "1",
             "--bind", f"127.0.0.1:{port}", "wsgi:app"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, base, log)
    try:
        for _ in range(150):
            if proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + log.read_text())
            try:
                if get(f"{base}/healthz") in (200, 503):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not answer:\n" + log.read_text())
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
