"""Care-team users of the dashboard, in Redis.

* ``triage:user:<username>``  hash: ``password`` (argon2id hash, argon2-cffi), ``role``
  (``nurse`` or ``admin``), ``created_at`` (ISO-8601 UTC)
* ``triage:users``  set of usernames
* ``triage:login:fail:<username>:<client>``  failed sign-ins, expiring after
  ``LOCK_SECONDS``: at ``MAX_FAILURES`` the pair is refused until the key expires. Keyed on
  the client too, so someone guessing from elsewhere cannot lock a nurse out of her own
  workstation for the night.

Created from the terminal: ``flask --app wsgi create-user NAME --role nurse``.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import keys
from .clock import now_iso

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import USERS, fail_key, user_key  # noqa: F401

ROLES = ("nurse", "admin")
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so a wrong name costs as long as a wrong
    password. Made on first use, not at import: hashing costs ~100 ms of every process's
    start-up (issue 9), and most processes (the worker, most web workers) never need it."""
    return _hasher.hash("not-a-real-password-for-timing")


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    username: str
    role: str
    created_at: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def normalise(username: str) -> str:
    return (username or "").strip().lower()


def create(r: redis.Redis, username: str, password: str, role: str, *,
           replace: bool = False) -> User:
    """Add a user (or, with ``replace``, set a new password and role for an existing one)."""
    username = normalise(username)
    if not USERNAME_RE.match(username):
        raise UserError("username: 2-32 characters, lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password must be at least {MIN_PASSWORD} characters")
    created = now_iso()
    fields = {"password": _hasher.hash(password), "role": role, "created_at": created}
    key = keys.of(r).user_key(username)
    if replace:
        fields["created_at"] = r.hget(key, "created_at") or created
        r.hset(key, mapping=fields)
    elif not r.hsetnx(key, "password", fields["password"]):
        raise UserError(f"user {username!r} exists (use --replace to set a new password)")
    else:
        r.hset(key, mapping=fields)
    r.sadd(keys.of(r).USERS, username)
    return User(username, role, fields["created_at"])


def get(r: redis.Redis, username: str) -> User | None:
    data = r.hgetall(keys.of(r).user_key(normalise(username)))
    if not data or data.get("role") not in ROLES:
        return None
    return User(normalise(username), data["role"], data.get("created_at", ""))


def locked(r: redis.Redis, username: str, client: str) -> int:
    """Seconds until this username may be tried again from this client (0: not locked)."""
    key = fail_key(normalise(username), client)
    count = int(r.get(key) or 0)
    if count < MAX_FAILURES:
        return 0
    return max(1, int(r.ttl(key)))


def authenticate(r: redis.Redis, username: str, password: str, client: str) -> User | None:
    """The user if the password is right, else None (and one more failure counted).
    Call ``locked`` first: a locked pair must not be checked at all."""
    username = normalise(username)
    key = keys.of(r).user_key(username)
    stored = r.hget(key, "password") if USERNAME_RE.match(username) else None
    try:
        _hasher.verify(stored or _dummy_hash(), password)
        ok = stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        fkey = fail_key(username, client)
        pipe = r.pipeline()
        pipe.incr(fkey)
        pipe.expire(fkey, LOCK_SECONDS)
        pipe.execute()
        return None
    r.delete(fail_key(username, client))
    if _hasher.check_needs_rehash(stored):
        r.hset(key, "password", _hasher.hash(password))
    return get(r, username)


# --------------------------------------------------------------------------- command line

def _create_user_command() -> Any:
    import click
    from flask import current_app
    from flask.cli import with_appcontext

    @click.command("create-user")
    @with_appcontext
    @click.argument("username")
    @click.option("--role", type=click.Choice(ROLES), default="nurse", show_default=True)
    @click.option("--password-stdin", is_flag=True,
                  help="Read the password from the first line of stdin (for scripts).")
    @click.option("--replace", is_flag=True,
                  help="The user exists: set this new password and role.")
    def create_user(username: str, role: str, password_stdin: bool, replace: bool) -> None:
        """Add a dashboard user (prompts for the password twice)."""
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        r = current_app.extensions["triage"].store.r
        try:
            user = create(r, username, password, role, replace=replace)
        except UserError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"user {user.username} ({user.role}) {'updated' if replace else 'created'}")

    return create_user


create_user_command = _create_user_command()
