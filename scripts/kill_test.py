"""Fault injection against the real service: gunicorn with the project's gunicorn.conf.py, a
real redis-server, signed Twilio requests, real signals. Nothing is mocked.

    python scripts/kill_test.py worker-kill [--messages 400]   # item 1: SIGKILL gunicorn workers
    python scripts/kill_test.py redis-stall [--messages 200]   # item 2: SIGSTOP redis-server
    python scripts/kill_test.py redis-kill  [--messages 300]   # items 3, 6: SIGKILL redis-server
    python scripts/kill_test.py stall-pending [--messages 40]  # item 2: "yes" to the
                                                               # emergency question, stalled
    python scripts/kill_test.py pager-delay [--messages 3]     # item 5: worker SIGKILLed
                                                               # holding an EMERGENCY record
    python scripts/kill_test.py all                            # the first three, full size

Every scenario sends red-flag texts ("I cant breathe"), each from its own number with its own
MessageSid, from several threads at once, and retries every request that failed or went
unanswered with the same MessageSid, as Twilio does. At the end it counts, straight from
Redis, the triage records against the EMERGENCY replies the phones received: every number
answered "Call 911 now." must have exactly one EMERGENCY record (none lost, none twice). Texts
answered while Redis was unreachable are spooled on disk and replayed (by the service on its
next request after recovery, and by the same replay the worker runs); the count is taken after
that replay. Prints one JSON line of figures per scenario; exits 1 if anything was lost or
duplicated, a reply took longer than the limit, or any request got a 5xx.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402

from bot.store import decode_record  # noqa: E402
from conftest import (  # noqa: E402
    API_TOKEN,
    AUTH_TOKEN,
    CARE_TEAM,
    ONCOLOGY_LINE,
    free_port,
    redis_server_binary,
    replies,
    sign,
)

RED_FLAG = "I cant breathe"
EMERGENCY_START = "Call 911 now."
REPLY_LIMIT = 3.0  # seconds: every reply under any Redis fault (issue 8, item 2)
PAGE_DELAY_LIMIT = 30.0  # seconds an EMERGENCY page may be delayed by a worker crash (item 5)


# ------------------------------------------------------------------ real processes

@dataclass
class RedisServer:
    folder: Path
    port: int
    aof: bool
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persist = (["--appendonly", "yes", "--appendfsync", "always", "--save", ""] if self.aof
                   else ["--appendonly", "no", "--save", ""])
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), *persist],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        for _ in range(400):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=15)


def service_env(redis_url: str, instance: Path, base: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "APP_ENV"}
    env.update({"REDIS_URL": redis_url, "INSTANCE_PATH": str(instance),
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SECRET_KEY": "kill-test-secret-key",
                "CARE_TEAM_API_TOKEN": API_TOKEN, "ONCOLOGY_LINE_NUMBER": ONCOLOGY_LINE,
                "CARE_TEAM_NUMBER": CARE_TEAM, "ON_CALL_NUMBERS": "+15550001111",
                "PUBLIC_BASE_URL": base, "TWILIO_ACCOUNT_SID": "", "TWILIO_FROM_NUMBER": "",
                "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"})
    return env


@contextmanager
def gunicorn(redis_url: str, folder: Path, workers: int | None = None) -> Iterator[Any]:
    """The service as deployed: gunicorn with the project's config (3 sync workers unless
    told otherwise), production settings, on a free loopback port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = folder / "gunicorn.log"
    args = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "2", "wsgi:app"]
    if workers:
        args[5:5] = ["--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=service_env(redis_url, folder / "instance",
                                                                base),
                                stdout=out, stderr=subprocess.STDOUT)
    server = Gunicorn(proc, port, base, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + log.read_text())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status in (200, 503) and len(server.workers()) >= 1:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not answer:\n" + log.read_text())
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _age(pid: int) -> float:
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Gunicorn:
    proc: subprocess.Popen[bytes]
    port: int
    base: str
    log: Path

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []


# ------------------------------------------------------------------ Twilio, as a client

@dataclass
class Tally:
    answered: dict[str, str] = field(default_factory=dict)   # phone -> reply received
    latencies: list[float] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    errors_5xx: int = 0
    other_status: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def post_sms(port: int, base: str, phone: str, sid: str, body: str, timeout: float
             ) -> tuple[int, str]:
    form = {"From": phone, "To": "+15550009999", "AccountSid": "ACkilltest",
            "MessageSid": sid, "NumMedia": "0", "Body": body}
    headers = {"X-Twilio-Signature": sign(f"{base}/sms", form),
               "Content-Type": "application/x-www-form-urlencoded"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/sms", urllib.parse.urlencode(form), headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def send_until_answered(server: Gunicorn, tally: Tally, phone: str, body: str,
                        stop_at: float) -> None:
    """One text, retried with the same MessageSid until it is answered (Twilio's retries)."""
    sid = "SM" + uuid.uuid4().hex
    while time.monotonic() < stop_at:
        started = time.monotonic()
        try:
            status, text = post_sms(server.port, server.base, phone, sid, body, timeout=15)
        except (OSError, http.client.HTTPException):
            # the worker was killed mid-request (no answer, or the answer cut off mid-body,
            # IncompleteRead): Twilio retries
            with tally.lock:
                tally.attempts += 1
                tally.retries += 1
            time.sleep(0.05)
            continue
        elapsed = time.monotonic() - started
        with tally.lock:
            tally.attempts += 1
            if status >= 500:
                tally.errors_5xx += 1
            elif status != 200:
                tally.other_status += 1
        if status == 200:
            with tally.lock:
                tally.latencies.append(elapsed)
                tally.answered[phone] = (replies(text) or [""])[0]
            return
        with tally.lock:
            tally.retries += 1
        time.sleep(0.05)


def load(server: Gunicorn, n: int, threads: int, tally: Tally, *, spacing: float = 0.0,
         budget: float = 600.0) -> list[str]:
    """``n`` red-flag texts, each from its own number, ``threads`` at a time."""
    phones = [f"+1555{random.randrange(10**6, 10**7)}{i % 10}" for i in range(n)]
    phones = list(dict.fromkeys(phones))
    todo = list(phones)
    lock = threading.Lock()
    stop_at = time.monotonic() + budget

    def run() -> None:
        while True:
            with lock:
                if not todo:
                    return
                phone = todo.pop()
            send_until_answered(server, tally, phone, RED_FLAG, stop_at)
            if spacing:
                time.sleep(spacing)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return phones


# ------------------------------------------------------------------ counting

def wait_for_service_replay(server: Gunicorn, folder: Path, wait: float = 20.0) -> int:
    """After recovery: texts from a new number (each from one gunicorn worker or another) until
    the service has replayed its own spool; returns the spooled texts still left."""
    from bot.spool import Spool

    spool = Spool(folder / "instance" / "spool")
    deadline = time.monotonic() + wait
    while spool.count() and time.monotonic() < deadline:
        post_sms(server.port, server.base, "+15550000000", "SM" + uuid.uuid4().hex, "hello",
                 timeout=15)
        time.sleep(1.0)
    return spool.count()


def replay_spool(redis_url: str, folder: Path) -> int:
    """What the worker does each tick: texts spooled during an outage, through the normal path.
    Also done by the web process on its next request; running it here makes the count final."""
    from bot import create_app

    app = create_app({"REDIS_URL": redis_url, "INSTANCE_PATH": str(folder / "instance"),
                      "APP_ENV": "local", "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                      "SECRET_KEY": "kill-test-secret-key", "CARE_TEAM_API_TOKEN": API_TOKEN,
                      "ONCOLOGY_LINE_NUMBER": ONCOLOGY_LINE, "CARE_TEAM_NUMBER": CARE_TEAM,
                      "LOG_LEVEL": "WARNING"})
    service = app.extensions["triage"]
    total = 0
    for _ in range(50):
        done = service.replay_spool()
        total += done
        if not service.spool.pending():
            break
        time.sleep(0.2)
    return total


def count(redis_url: str, phones: list[str], tally: Tally) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    per_phone: dict[str, int] = {}
    outage = 0
    for _rid, fields in r.xrange("triage:records"):
        rec = decode_record(fields)
        if rec.get("tier") == "EMERGENCY":
            per_phone[rec.get("phone", "")] = per_phone.get(rec.get("phone", ""), 0) + 1
            outage += bool(rec.get("received_during_outage"))
    told_911 = [p for p in phones if tally.answered.get(p, "").startswith(EMERGENCY_START)]
    lost = [p for p in told_911 if per_phone.get(p, 0) == 0]
    duplicated = [p for p in told_911 if per_phone.get(p, 0) > 1]
    lat = sorted(tally.latencies)
    return {
        "texts": len(phones),
        "answered": len(tally.answered),
        "told_call_911": len(told_911),
        "emergency_records": sum(per_phone.get(p, 0) for p in phones),
        "records_from_outage_spool": outage,
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unanswered": len(phones) - len(tally.answered),
        "attempts": tally.attempts,
        "retries_same_sid": tally.retries,
        "http_5xx": tally.errors_5xx,
        "reply_p50_s": round(statistics.median(lat), 3) if lat else None,
        "reply_max_s": round(lat[-1], 3) if lat else None,
    }


# ------------------------------------------------------------------ the scenarios

def worker_kill(messages: int = 400, threads: int = 8, folder: Path | None = None,
                seed: int | None = None, max_kills: int | None = None,
                every: tuple[float, float] = (0.2, 0.8), spacing: float = 0.0,
                pager_kills: int = 0, raised: int = 20) -> dict[str, Any]:
    """Item 1: SIGKILL gunicorn workers at random moments (every ``every`` seconds, at most
    ``max_kills``) under red-flag load. Then (``pager_kills``) item 4: the real worker pages
    them, and ``raised`` URGENT escalations raised in place, while SIGKILLed."""
    random.seed(seed)
    with _folder(folder) as tmp:
        rs = RedisServer(tmp, free_port(), aof=False)
        rs.start()
        try:
            with gunicorn(rs.url, tmp) as server:
                tally = Tally()
                kills = 0
                done = threading.Event()

                def killer() -> None:
                    # at random moments, a worker that has finished booting (so the kill
                    # lands on a request in progress, not on a worker still loading flows)
                    nonlocal kills
                    while not done.wait(random.uniform(*every)):
                        if max_kills is not None and kills >= max_kills:
                            return
                        pids = [p for p in server.workers() if _age(p) > 1.0]
                        if pids:
                            try:
                                os.kill(random.choice(pids), signal.SIGKILL)
                                kills += 1
                            except ProcessLookupError:
                                pass

                k = threading.Thread(target=killer)
                k.start()
                try:
                    phones = load(server, messages, threads, tally, spacing=spacing)
                finally:
                    done.set()
                    k.join()
            replayed = replay_spool(rs.url, tmp)
            out = {"scenario": "worker-kill", "sigkills": kills, "replayed": replayed,
                   **count(rs.url, phones, tally)}
            if pager_kills:
                out.update(page_with_killed_workers(rs.url, tmp, pager_kills,
                                                    raised=raised))
        finally:
            rs.stop()
    return out


ON_CALL = ("+15550001111", "+15550002222")


def page_with_killed_workers(redis_url: str, folder: Path, kills: int,
                             budget: float = 120.0, raised: int = 20) -> dict[str, Any]:
    """Item 4/5: the real worker (``python -m bot.worker``, console SMS backend: every page is
    printed) pages every record, SIGKILLed ``kills`` times at random moments and started
    again each time. Besides the EMERGENCY records already there, ``raised`` conversations
    open an URGENT escalation, and an EMERGENCY record of the same conversation arrives after
    the first kill: the same escalation is raised in place and paged again at EMERGENCY.
    Counts the texts per (escalation, on-call number, tier): EMERGENCY exactly once for every
    escalation, URGENT at most once (none if the raise came before the URGENT page went)."""
    import re

    from bot.store import Store

    env = service_env(redis_url, folder / "instance", "https://triage.example.org")
    env.update({"ON_CALL_NUMBERS": ",".join(ON_CALL), "WORKER_TICK_SECONDS": "1",
                "PUBLIC_BASE_URL": ""})  # no receipts: no voice calls mixed into the count
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    store = Store(r, session_ttl=3600, dedup_ttl=3600)
    rids = [rid for rid, f in r.xrange("triage:records")
            if decode_record(f).get("tier") == "EMERGENCY"]

    def conversation_record(i: int, tier: str) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return store.append_record({
            "phone": f"+1555200{i:04d}", "flow": "fever" if tier == "URGENT" else "red_flag",
            "tier": tier, "kind": "completed" if tier == "URGENT" else "red_flag",
            "reasons": ["temperature 38.6 C >= 38.0" if tier == "URGENT" else "can't breathe"],
            "answers": {}, "episode_id": f"raise{i}", "conversation_id": f"raise{i}",
            "created_at": stamp, "started_at": stamp})

    holders = [conversation_record(i, "URGENT") for i in range(raised)]
    outputs: list[Path] = []

    def start() -> subprocess.Popen[bytes]:
        out = folder / f"worker-{len(outputs)}.log"
        outputs.append(out)
        with out.open("wb") as fh:
            return subprocess.Popen([sys.executable, "-m", "bot.worker"], cwd=ROOT, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT)

    def all_paged() -> bool:
        pipe = r.pipeline(transaction=False)
        for rid in [*rids, *holders]:
            pipe.hmget(f"triage:esc:{rid}", "page_status", "escalation_tier")
        got = pipe.execute()
        return (all(st == "sent" for st, _ in got)
                and all(tier == "EMERGENCY" for _, tier in got[len(rids):]))

    started = time.monotonic()
    proc = start()
    done_kills = 0
    raisers: list[str] = []
    try:
        def urgent_paged() -> bool:
            pipe = r.pipeline(transaction=False)
            for rid in holders:
                pipe.hget(f"triage:esc:{rid}", "page_status")
            return all(st == "sent" for st in pipe.execute())

        while done_kills < kills and time.monotonic() - started < budget:
            if not raisers and done_kills == kills - 1:
                # before the last kill, the URGENT conversations become EMERGENCY once their
                # URGENT page went out: the raise's pages are sent under that kill
                while not urgent_paged() and time.monotonic() - started < budget / 2:
                    time.sleep(0.2)
                raisers = [conversation_record(i, "EMERGENCY") for i in range(raised)]
                time.sleep(random.uniform(0.05, 0.6))
            else:
                time.sleep(random.uniform(0.8, 2.0))  # boots (~1 s), then pages a while
            proc.kill()
            proc.wait()
            done_kills += 1
            proc = start()
        if not raisers:
            raisers = [conversation_record(i, "EMERGENCY") for i in range(raised)]
        while not all_paged() and time.monotonic() - started < budget:
            time.sleep(0.5)
        paged_in = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    sent: dict[tuple[str, str, str], int] = {}
    pattern = re.compile(r"\[sms to (\S+)\] (?:OVERDUE, not acknowledged: )?"
                         r"(EMERGENCY|URGENT|SOON)\b.*escalation (\d+-\d+)")
    for out in outputs:
        for line in out.read_text(errors="replace").splitlines():
            m = pattern.search(line)
            if m:
                key = (m.group(3), m.group(1), m.group(2))
                sent[key] = sent.get(key, 0) + 1
    from bot.store import mask_phone

    expected = {(rid, mask_phone(n), "EMERGENCY") for rid in [*rids, *holders] for n in ON_CALL}
    raised_ok = sum(1 for h in holders if r.hget(f"triage:esc:{h}", "raised_by") in raisers)
    resent = sum(1 for rid in [*rids, *holders]
                 for e in r.lrange(f"triage:esc:{rid}:events", 0, -1)
                 if json.loads(e).get("action") == "page_resent")
    return {"worker_sigkills": done_kills, "pages_expected": len(expected),
            "pages_sent": sum(c for k, c in sent.items() if k in expected),
            "pages_missing": len(expected - set(sent)),
            "pages_duplicated": sum(c - 1 for c in sent.values() if c > 1),
            "raised_escalations": raised_ok, "raised_expected": raised,
            "pages_resent_after_kill_in_send": resent,
            "urgent_pages_before_raise": sum(c for k, c in sent.items() if k[2] == "URGENT"),
            "pages_other": sum(c for k, c in sent.items()
                               if k not in expected and k[2] != "URGENT"),
            "all_paged_within_s": round(paged_in, 1)}


def redis_stall(messages: int = 200, threads: int = 6, stall: float = 8.0,
                folder: Path | None = None) -> dict[str, Any]:
    """Item 2 (and 3): SIGSTOP the redis-server for ``stall`` seconds in the middle of the
    load, then SIGCONT. Every reply within REPLY_LIMIT, none 5xx, nothing lost."""
    with _folder(folder) as tmp:
        rs = RedisServer(tmp, free_port(), aof=False)
        rs.start()
        try:
            with gunicorn(rs.url, tmp) as server:
                tally = Tally()
                stalled = threading.Event()

                def staller() -> None:
                    time.sleep(1.0)
                    rs.signal(signal.SIGSTOP)
                    stalled.set()
                    time.sleep(stall)
                    rs.signal(signal.SIGCONT)

                s = threading.Thread(target=staller)
                s.start()
                # spaced so that the load lasts longer than the stall
                phones = load(server, messages, threads, tally,
                              spacing=max(0.0, (stall + 3.0) * threads / messages))
                s.join()
                left = wait_for_service_replay(server, tmp)
            replayed = replay_spool(rs.url, tmp)
            out = {"scenario": "redis-stall", "stall_s": stall,
                   "left_after_service_replay": left, "replayed_at_end": replayed,
                   **count(rs.url, phones, tally)}
        finally:
            rs.stop()
    return out


def redis_kill(messages: int = 300, threads: int = 6, down: float = 4.0,
               folder: Path | None = None) -> dict[str, Any]:
    """Items 3 and 6: redis-server with AOF ``appendfsync always`` SIGKILLed under load, left
    dead for ``down`` seconds (texts spooled), restarted on the same files. Every text answered
    "Call 911 now." has its record after the restart and the replay."""
    with _folder(folder) as tmp:
        rs = RedisServer(tmp, free_port(), aof=True)
        rs.start()
        try:
            with gunicorn(rs.url, tmp) as server:
                tally = Tally()
                before = {}

                def assassin() -> None:
                    time.sleep(1.0)
                    r = redis.Redis.from_url(rs.url, decode_responses=True)
                    before["records"] = r.xlen("triage:records")
                    rs.signal(signal.SIGKILL)
                    time.sleep(down)
                    rs.start()

                a = threading.Thread(target=assassin)
                a.start()
                phones = load(server, messages, threads, tally,
                              spacing=max(0.0, (down + 3.0) * threads / messages))
                a.join()
                left = wait_for_service_replay(server, tmp)
            replayed = replay_spool(rs.url, tmp)
            out = {"scenario": "redis-kill", "down_s": down, "aof": "appendfsync always",
                   "records_seen_just_before_kill": before.get("records"),
                   "left_after_service_replay": left, "replayed_at_end": replayed,
                   **count(rs.url, phones, tally)}
        finally:
            rs.stop()
    return out


def _post_with_cookie(server: Gunicorn, phone: str, sid: str, body: str, cookie: str,
                      timeout: float = 15) -> tuple[int, str, str]:
    """A signed text carrying the cookie Twilio would send back; (status, reply, Set-Cookie)."""
    form = {"From": phone, "To": "+15550009999", "AccountSid": "ACkilltest",
            "MessageSid": sid, "NumMedia": "0", "Body": body}
    headers = {"X-Twilio-Signature": sign(f"{server.base}/sms", form),
               "Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("POST", "/sms", urllib.parse.urlencode(form), headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, text, (resp.getheader("Set-Cookie") or "").split(";")[0]
    finally:
        conn.close()


def stall_pending(patients: int = 40, threads: int = 4,
                  folder: Path | None = None) -> dict[str, Any]:
    """Item 2, the pending question: ``patients`` conversations reach the fever checklist's
    emergency-signs question (the reply sets the signed cookie), then redis-server is
    SIGSTOPped and each answers "yes" carrying its cookie, retried with the same MessageSid
    until answered. Every one must be told "Call 911 now." within REPLY_LIMIT, and after
    SIGCONT and the replay each must have its EMERGENCY fever record (danger_signs yes)."""
    with _folder(folder) as tmp:
        rs = RedisServer(tmp, free_port(), aof=False)
        rs.start()
        try:
            with gunicorn(rs.url, tmp) as server:
                phones = [f"+1555400{i:04d}" for i in range(patients)]
                cookies: dict[str, str] = {}
                for phone in phones:
                    status, text, cookie = _post_with_cookie(
                        server, phone, "SM" + uuid.uuid4().hex, "fever", "")
                    if status == 200 and "YES or NO" in (replies(text) or [""])[0]:
                        cookies[phone] = cookie
                tally = Tally()
                todo = list(cookies)
                lock = threading.Lock()

                def run() -> None:
                    while True:
                        with lock:
                            if not todo:
                                return
                            phone = todo.pop()
                        sid = "SM" + uuid.uuid4().hex
                        for _ in range(20):
                            started = time.monotonic()
                            try:
                                status, text, _ = _post_with_cookie(server, phone, sid, "yes",
                                                                    cookies[phone])
                            except (OSError, http.client.HTTPException):
                                continue
                            with tally.lock:
                                tally.attempts += 1
                                tally.errors_5xx += status >= 500
                            if status == 200:
                                with tally.lock:
                                    tally.latencies.append(time.monotonic() - started)
                                    tally.answered[phone] = (replies(text) or [""])[0]
                                break

                rs.signal(signal.SIGSTOP)
                try:
                    pool = [threading.Thread(target=run) for _ in range(threads)]
                    for t in pool:
                        t.start()
                    for t in pool:
                        t.join()
                finally:
                    rs.signal(signal.SIGCONT)
                left = wait_for_service_replay(server, tmp)
            replayed = replay_spool(rs.url, tmp)
            r = redis.Redis.from_url(rs.url, decode_responses=True)
            found: dict[str, int] = {}
            for _rid, fields in r.xrange("triage:records"):
                rec = decode_record(fields)
                if (rec.get("tier") == "EMERGENCY" and rec.get("flow") == "fever"
                        and (rec.get("answers") or {}).get("danger_signs") == "yes"
                        and rec.get("received_during_outage")):
                    found[rec["phone"]] = found.get(rec["phone"], 0) + 1
        finally:
            rs.stop()
    told = [p for p in cookies if tally.answered.get(p, "").startswith(EMERGENCY_START)]
    lat = sorted(tally.latencies)
    return {"scenario": "stall-pending", "conversations": patients,
            "cookies_set": len(cookies), "answered_yes_in_stall": len(tally.answered),
            "told_call_911": len(told), "http_5xx": tally.errors_5xx,
            "left_after_service_replay": left, "replayed_at_end": replayed,
            "emergency_records_after_replay": sum(found.get(p, 0) for p in told),
            "lost": sum(1 for p in told if not found.get(p)),
            "duplicated": sum(1 for p in told if found.get(p, 0) > 1),
            "reply_p50_s": round(statistics.median(lat), 3) if lat else None,
            "reply_max_s": round(lat[-1], 3) if lat else None}


def pager_delay(rounds: int = 3, folder: Path | None = None) -> dict[str, Any]:
    """Item 5: how long a worker's crash delays an EMERGENCY page. The real worker at its
    default tick (15 s), two on-call numbers; per round an EMERGENCY record is written, the
    worker is SIGKILLed the moment it holds the record (read from the stream but not yet
    acknowledged, or routed but not yet paged), and a new worker is started at once (what a
    supervisor's restart does). Measures the seconds from the kill, and from the record, to
    the page the new worker prints. Limit: 30 s after the kill (issue 8, item 5)."""
    import re

    from bot.store import Store

    with _folder(folder) as tmp:
        rs = RedisServer(tmp, free_port(), aof=False)
        rs.start()
        env = service_env(rs.url, tmp / "instance", "https://triage.example.org")
        env.update({"ON_CALL_NUMBERS": ",".join(ON_CALL), "PUBLIC_BASE_URL": "",
                    "WORKER_TICK_SECONDS": "15"})
        r = redis.Redis.from_url(rs.url, decode_responses=True)
        store = Store(r, session_ttl=3600, dedup_ttl=3600)
        logs: list[Path] = []

        def start() -> subprocess.Popen[bytes]:
            out = tmp / f"delay-worker-{len(logs)}.log"
            logs.append(out)
            with out.open("wb") as fh:
                return subprocess.Popen([sys.executable, "-m", "bot.worker"], cwd=ROOT,
                                        env=env, stdout=fh, stderr=subprocess.STDOUT)

        def printed(log: Path, rid: str) -> bool:
            pattern = re.compile(rf"\[sms to \S+\] EMERGENCY.*escalation {re.escape(rid)}")
            return bool(pattern.search(log.read_text(errors="replace")))

        results: list[dict[str, Any]] = []
        try:
            for i in range(rounds):
                r.delete("worker:heartbeat")
                proc = start()
                while not r.get("worker:heartbeat"):  # its first tick is done
                    time.sleep(0.05)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                rid = store.append_record({
                    "phone": f"+1555300{i:04d}", "flow": "red_flag", "tier": "EMERGENCY",
                    "kind": "red_flag", "reasons": ["can't breathe"], "answers": {},
                    "episode_id": f"delay{i}", "conversation_id": f"delay{i}",
                    "created_at": stamp, "started_at": stamp})
                t_record = time.monotonic()
                held = ""
                while not held and time.monotonic() - t_record < 40:
                    pending = r.xpending("triage:records", "pagers")["pending"]
                    if pending:
                        held = "read, not acknowledged"
                    elif r.hget(f"triage:esc:{rid}", "page_status") == "pending":
                        held = "routed, not paged"
                if held:
                    os.kill(proc.pid, signal.SIGKILL)
                t_kill = time.monotonic()
                proc.wait()
                late = printed(logs[-1], rid)
                proc = start()
                while not printed(logs[-1], rid) and time.monotonic() - t_kill < 120:
                    time.sleep(0.05)
                t_page = time.monotonic()
                ok = printed(logs[-1], rid)
                proc.terminate()
                proc.wait(timeout=20)
                results.append({"held": held or "never seen held", "paged_before_kill": late,
                                "paged_after_kill_s": round(t_page - t_kill, 1) if ok else None,
                                "record_to_page_s": round(t_page - t_record, 1) if ok
                                else None})
        finally:
            rs.stop()
    delays = [x["paged_after_kill_s"] for x in results if x["paged_after_kill_s"] is not None
              and not x["paged_before_kill"]]
    return {"scenario": "pager-delay", "tick_s": 15, "rounds": results,
            "max_delay_after_kill_s": max(delays) if delays else None,
            "measured": len(delays),
            "pages_missing": sum(1 for x in results if x["paged_after_kill_s"] is None
                                 and not x["paged_before_kill"])}


@contextmanager
def _folder(folder: Path | None) -> Iterator[Path]:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="kill-test-") as tmp:
        yield Path(tmp)


def verdict(out: dict[str, Any], latency_limit: float | None = None) -> list[str]:
    problems = []
    if out["lost"]:
        problems.append(f"{out['lost']} EMERGENCY record(s) lost")
    if out["duplicated"]:
        problems.append(f"{out['duplicated']} EMERGENCY record(s) written twice")
    if out["unanswered"]:
        problems.append(f"{out['unanswered']} text(s) never answered")
    if out["told_call_911"] != out["answered"]:
        problems.append("a red-flag text was answered without 'Call 911 now.'")
    if out["http_5xx"]:
        problems.append(f"{out['http_5xx']} 5xx answer(s)")
    if out.get("pages_missing") or out.get("pages_duplicated") or out.get("pages_other"):
        problems.append(f"pages: {out.get('pages_missing')} missing, "
                        f"{out.get('pages_duplicated')} duplicated, "
                        f"{out.get('pages_other')} unexpected")
    if out.get("raised_escalations", 0) != out.get("raised_expected", 0):
        problems.append(f"{out.get('raised_escalations')} of {out.get('raised_expected')} "
                        "URGENT escalations raised in place")
    if latency_limit and (out["reply_max_s"] or 0) > latency_limit:
        problems.append(f"slowest reply {out['reply_max_s']} s > {latency_limit} s")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["worker-kill", "redis-stall", "redis-kill",
                                             "pager-delay", "stall-pending", "all"])
    parser.add_argument("--messages", type=int, default=None)
    args = parser.parse_args()
    runs = {"worker-kill": lambda n: worker_kill(n or 400, pager_kills=5),
            "redis-stall": lambda n: redis_stall(n or 200),
            "redis-kill": lambda n: redis_kill(n or 300)}
    names = list(runs) if args.scenario == "all" else [args.scenario]
    failed = False
    if args.scenario == "stall-pending":
        out = stall_pending(args.messages or 40)
        good = (out["cookies_set"] == out["conversations"] == out["told_call_911"]
                and not out["lost"] and not out["duplicated"] and not out["http_5xx"]
                and (out["reply_max_s"] or 0) <= REPLY_LIMIT)
        out["verdict"] = "PASS" if good else "FAIL"
        print(json.dumps(out), flush=True)
        sys.exit(0 if good else 1)
    if args.scenario == "pager-delay":
        out = pager_delay(args.messages or 3)
        worst = out["max_delay_after_kill_s"]
        good = bool(out["measured"]) and not out["pages_missing"] and worst <= PAGE_DELAY_LIMIT
        out["verdict"] = "PASS" if good else f"FAIL: worst {worst} s, limit {PAGE_DELAY_LIMIT} s"
        print(json.dumps(out), flush=True)
        sys.exit(0 if good else 1)
    for name in names:
        out = runs[name](args.messages)
        limit = REPLY_LIMIT if name != "worker-kill" else None
        problems = verdict(out, limit)
        out["verdict"] = "PASS" if not problems else "FAIL: " + "; ".join(problems)
        failed |= bool(problems)
        print(json.dumps(out), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
