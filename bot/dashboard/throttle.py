"""Sign-in limits that slow a guesser without letting a stranger lock a nurse out.

Every attempt is ``(username, client address, device)``; the address is ``request.remote_addr``
after ProxyFix (``PROXY_FIX_HOPS``), so behind the TLS proxy it is the real client's, and
without a configured proxy a forged X-Forwarded-For changes nothing.

* **Known device.** A browser that has signed in as a user before carries a signed device
  cookie (``triage_device``, 90 days, HttpOnly) naming that user. Its attempts for that user
  are limited on their own (five failures lock that device for that user for 15 minutes,
  ``users.locked``) and are exempt from the limits below, which strangers can trigger. So a
  nurse at her own workstation signs in whatever anyone else is trying.
* **Per username, exponential backoff** (not a hard lock): after ``LOGIN_USER_FREE_FAILURES``
  (5) failures for a username from anywhere but its known devices, each further attempt must
  wait ``LOGIN_USER_BACKOFF_SECONDS`` (2 s) x 2^(failures - 5), at most
  ``LOGIN_USER_BACKOFF_CAP_SECONDS`` (300 s) after the last failure. Refused attempts are not
  checked and not counted. The count is forgotten an hour after the last failure, and a
  correct password clears it.
* **Per client address**: five failures for one username from one address lock that pair for
  15 minutes (``users.locked``); ``LOGIN_ADDRESS_MAX_FAILURES`` (30) failures from one address,
  any usernames, within ``LOGIN_ADDRESS_WINDOW_SECONDS`` (15 min) refuse that address until the
  window ends.
* **Spraying**: once ``LOGIN_SPRAY_MAX_USERNAMES`` (10) different usernames have failed from
  one address within ``LOGIN_SPRAY_WINDOW_SECONDS`` (1 h), that address may not try any other
  username until the window ends.

Redis keys (``triage:login:``): ``backoff:<username>`` hash {n, at}; ``addr:<address>``
counter; ``spray:<address>`` set of usernames; plus ``users.fail_key`` for the pairs.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import redis
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .. import users
from ..keys import address_key, backoff_key, spray_key

DEVICE_COOKIE = "triage_device"
DEVICE_DAYS = 90
DEVICE_MAX_USERS = 8


@dataclass(frozen=True)
class Limits:
    user_free: int = 5
    user_base: float = 2.0
    user_cap: float = 300.0
    user_window: int = 3600
    address_max: int = 30
    address_window: int = 15 * 60
    spray_max: int = 10
    spray_window: int = 3600

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        d = cls()
        return cls(
            user_free=int(config.get("LOGIN_USER_FREE_FAILURES", d.user_free)),
            user_base=float(config.get("LOGIN_USER_BACKOFF_SECONDS", d.user_base)),
            user_cap=float(config.get("LOGIN_USER_BACKOFF_CAP_SECONDS", d.user_cap)),
            user_window=int(config.get("LOGIN_USER_WINDOW_SECONDS", d.user_window)),
            address_max=int(config.get("LOGIN_ADDRESS_MAX_FAILURES", d.address_max)),
            address_window=int(config.get("LOGIN_ADDRESS_WINDOW_SECONDS", d.address_window)),
            spray_max=int(config.get("LOGIN_SPRAY_MAX_USERNAMES", d.spray_max)),
            spray_window=int(config.get("LOGIN_SPRAY_WINDOW_SECONDS", d.spray_window)),
        )


@dataclass(frozen=True)
class Attempt:
    username: str
    address: str
    device: str | None = None  # the device id, when its cookie names this username

    @property
    def client(self) -> str:
        """The client for the per-pair lock: the known device, else the address."""
        return f"device:{self.device}" if self.device else f"addr:{self.address}"


@dataclass(frozen=True)
class Refusal:
    seconds: int
    reason: str  # for the audit log: which limit


def backoff_delay(failures: int, limits: Limits) -> float:
    if failures < limits.user_free:
        return 0.0
    return min(limits.user_cap, limits.user_base * 2 ** (failures - limits.user_free))


def refused(r: redis.Redis, attempt: Attempt, limits: Limits, now: float) -> Refusal | None:
    """Why this attempt must not even be checked (and for how long), or None."""
    pair = users.locked(r, attempt.username, attempt.client)
    if pair:
        return Refusal(pair, "too many failures for this username from this client")
    if attempt.device:
        return None  # a known device: only its own limit
    pipe = r.pipeline(transaction=False)
    pipe.get(address_key(attempt.address))
    pipe.ttl(address_key(attempt.address))
    pipe.scard(spray_key(attempt.address))
    pipe.sismember(spray_key(attempt.address), attempt.username)
    pipe.ttl(spray_key(attempt.address))
    pipe.hgetall(backoff_key(attempt.username))
    addr_failures, addr_ttl, sprayed, known, spray_ttl, backoff = pipe.execute()
    if int(addr_failures or 0) >= limits.address_max:
        return Refusal(max(1, int(addr_ttl)), "too many failures from this address")
    if int(sprayed or 0) >= limits.spray_max and not known:
        return Refusal(max(1, int(spray_ttl)), "too many usernames tried from this address")
    failures = int(backoff.get("n") or 0)
    delay = backoff_delay(failures, limits)
    if delay:
        wait = float(backoff.get("at") or 0) + delay - now
        if wait > 0:
            return Refusal(max(1, math.ceil(wait)), "username backoff after repeated failures")
    return None


def record_failure(r: redis.Redis, attempt: Attempt, limits: Limits, now: float) -> None:
    """After a wrong password (``users.authenticate`` already counted the pair)."""
    if attempt.device:
        return
    pipe = r.pipeline(transaction=False)
    bkey = backoff_key(attempt.username)
    pipe.hincrby(bkey, "n", 1)
    pipe.hset(bkey, "at", f"{now:.3f}")
    pipe.expire(bkey, limits.user_window)
    # Fixed windows from the first failure (EXPIRE NX needs Redis 7; the embedded one is 6.2).
    akey = address_key(attempt.address)
    pipe.set(akey, 0, ex=limits.address_window, nx=True)
    pipe.incr(akey)
    skey = spray_key(attempt.address)
    pipe.sadd(skey, attempt.username)
    pipe.ttl(skey)
    spray_ttl = pipe.execute()[-1]
    if spray_ttl < 0:
        r.expire(skey, limits.spray_window)


def record_success(r: redis.Redis, attempt: Attempt) -> None:
    r.delete(backoff_key(attempt.username))


# --------------------------------------------------------------------------- device cookie

def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="triage-device")


def read_device(secret: str, raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        data = _serializer(secret).loads(raw, max_age=DEVICE_DAYS * 86400)
    except BadSignature:
        return None
    if (not isinstance(data, dict) or not isinstance(data.get("id"), str)
            or not isinstance(data.get("users"), list)):
        return None
    return data


def device_for(secret: str, raw: str | None, username: str) -> str | None:
    """The device id if the cookie is genuine and names ``username``."""
    data = read_device(secret, raw)
    if data and username in data["users"]:
        return str(data["id"])
    return None


def remember(secret: str, raw: str | None, username: str) -> str:
    """The device cookie's new value after ``username`` signed in on this browser."""
    data = read_device(secret, raw) or {"id": secrets.token_urlsafe(16), "users": []}
    names = [u for u in data["users"] if u != username][-(DEVICE_MAX_USERS - 1):]
    return _serializer(secret).dumps({"id": data["id"], "users": [*names, username]})
