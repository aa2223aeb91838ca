"""Settings, read from the environment; ``create_app(overrides)`` wins over both.

Every setting is listed in ``.env.example`` (a test checks both ways) and the README's settings
table. A setting that is present but empty (``FLOWS_DIR=`` in a copied ``.env``) means its
default, exactly like an absent one.

Where the clinical content and local state live when not set:

* ``FLOWS_DIR``: in a source checkout, ``flows/`` at the top of the repository (the source of
  truth that clinicians edit); in an installed package, the copy of it shipped inside the
  package (``bot/_flows``).
* ``INSTANCE_PATH``: in a source checkout, ``instance/`` at the top of the repository; in an
  installed package, ``instance/`` in the folder the command is started from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
PACKAGED_FLOWS = PACKAGE / "_flows"
DEFAULT_CLINIC_TIMEZONE = "America/New_York"


def source_checkout(root: Path = ROOT) -> bool:
    """Is this package running from the repository (not installed from a wheel)?"""
    return (root / "pyproject.toml").is_file() and (root / "flows").is_dir()


def default_flows_dir(root: Path = ROOT, packaged: Path = PACKAGED_FLOWS) -> Path:
    """The repository's ``flows/`` in a source checkout (so an edit is what runs, never a
    stale packaged copy), else the flows shipped in the package."""
    if source_checkout(root):
        return root / "flows"
    return packaged


def default_instance_path(root: Path = ROOT, cwd: Path | None = None) -> Path:
    if source_checkout(root):
        return root / "instance"
    return (cwd or Path.cwd()) / "instance"


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:  # a typo in a setting must fail loudly at start-up
        raise RuntimeError(f"setting {name} must be a whole number, got {raw!r}") from exc


APP_ENVS = ("local", "production")
# Outside local use the service refuses to start without these (see ``check_production``):
# a real Redis (the embedded one is for local use), the secrets, the numbers patients are
# told to call and the numbers paged for EMERGENCY and URGENT outcomes.
PRODUCTION_REQUIRED = ("REDIS_URL", "TWILIO_AUTH_TOKEN", "SECRET_KEY", "CARE_TEAM_API_TOKEN",
                       "ONCOLOGY_LINE_NUMBER", "CARE_TEAM_NUMBER", "ON_CALL_NUMBERS")
_SPOKEN_NUMBER_RE = re.compile(r"^\+?[0-9][0-9 ().-]{5,30}[0-9]$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{7,14}$")
DEFAULT_MAX_CONTENT_LENGTH = 256 * 1024  # Twilio's webhook and the dashboard's forms are small


class StartupRefused(RuntimeError):
    """The service must not start as configured; the message is one line naming the fix."""


def app_env(settings: dict[str, Any]) -> str:
    """``local`` or ``production``. APP_ENV wins; unset, a service given a REDIS_URL is
    production (the README's definition of "outside local use") and one that starts its own
    embedded Redis is local. Anything else is refused: a typo must not relax the checks."""
    raw = str(settings.get("APP_ENV") or "").strip().lower()
    if not raw:
        return "production" if settings.get("REDIS_URL") else "local"
    if raw not in APP_ENVS:
        raise StartupRefused(f"setting APP_ENV must be one of {', '.join(APP_ENVS)}, "
                             f"got {raw!r}")
    return raw


def check_production(settings: dict[str, Any]) -> None:
    """Refuse to run a production service that would tell patients "the number your team
    gave you" or page nobody. Raises StartupRefused naming every missing or malformed
    setting, in one line."""
    on_call = [n.strip() for n in str(settings.get("ON_CALL_NUMBERS") or "").split(",")
               if n.strip()]  # as bot.paging reads it: empty entries are skipped
    missing = [k for k in PRODUCTION_REQUIRED if not str(settings.get(k) or "").strip()
               or (k == "ON_CALL_NUMBERS" and not on_call)]
    bad: list[str] = []
    for key in ("ONCOLOGY_LINE_NUMBER", "CARE_TEAM_NUMBER"):
        value = str(settings.get(key) or "").strip()
        if value and not _SPOKEN_NUMBER_RE.match(value):
            bad.append(f"{key} (not a phone number)")
    if not all(_E164_RE.match(n) for n in on_call):
        bad.append("ON_CALL_NUMBERS (comma-separated numbers like +15551234567)")
    if missing or bad:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"malformed {', '.join(bad)}"] if bad else [])
        raise StartupRefused(
            f"refusing to start outside local use (APP_ENV=production): {'; '.join(problems)}"
            " (see .env.example)")


def clinic_zone(name: str | None) -> ZoneInfo:
    """The clinic's time zone; an unknown name stops the service at start-up (a nurse must
    never read a time in a zone she did not expect)."""
    name = (name or "").strip() or DEFAULT_CLINIC_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RuntimeError(f"setting CLINIC_TIMEZONE must be an IANA time zone such as "
                           f"America/New_York or Europe/London, got {name!r}") from exc


def defaults() -> dict[str, Any]:
    """Every setting at its default, whatever the environment says (the vignette runner's
    throwaway app uses this so a production .env cannot leak into it)."""
    return from_environment({})


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ

    def env(name: str, default: str) -> str:
        return environ.get(name, "").strip() or default

    def _int_(name: str, default: int) -> int:
        return _int(environ, name, default)

    return {
        # local or production (unset: production when REDIS_URL is set, see app_env)
        "APP_ENV": env("APP_ENV", "").strip().lower(),
        # Redis: unset means "start an embedded redis-server under INSTANCE_PATH".
        "REDIS_URL": env("REDIS_URL", "") or None,
        # REDIS_URL is one node of a Redis Cluster (1/true/yes): the webhook's writes stay in
        # the patient's slot, records go through the patient's outbox (docs/performance.md).
        # The service-wide keys are named {triage}:... there (keys.Layout): the pager too.
        "REDIS_CLUSTER": env("REDIS_CLUSTER", "").lower() in ("1", "true", "yes"),
        # Every Redis call's connect and read timeout: a stalled Redis costs one of these, then
        # the circuit breaker answers without Redis (docs/reliability.md).
        "REDIS_TIMEOUT_MS": _int_("REDIS_TIMEOUT_MS", 500),
        # Texts received while Redis is unreachable, fsync'd here and replayed when it returns
        # (unset: spool/ under INSTANCE_PATH). Must be a persistent, local disk.
        "SPOOL_DIR": env("SPOOL_DIR", ""),
        "INSTANCE_PATH": env("INSTANCE_PATH", str(default_instance_path())),
        # The built engine kept for the next process (start-up; bot/conversation/snapshot.py):
        # unset means INSTANCE_PATH; "off" builds it at every start.
        "ENGINE_SNAPSHOT_DIR": env("ENGINE_SNAPSHOT_DIR", ""),
        # Twilio
        "TWILIO_AUTH_TOKEN": env("TWILIO_AUTH_TOKEN", ""),
        "TWILIO_ACCOUNT_SID": env("TWILIO_ACCOUNT_SID", ""),
        "TWILIO_FROM_NUMBER": env("TWILIO_FROM_NUMBER", ""),
        "PUBLIC_BASE_URL": env("PUBLIC_BASE_URL", "").rstrip("/"),
        # People and numbers
        "CARE_TEAM_API_TOKEN": env("CARE_TEAM_API_TOKEN", ""),
        "ONCOLOGY_LINE_NUMBER": env("ONCOLOGY_LINE_NUMBER", ""),
        "CARE_TEAM_NUMBER": env("CARE_TEAM_NUMBER", ""),
        "ON_CALL_NUMBERS": env("ON_CALL_NUMBERS", ""),
        # Voice escalation of an EMERGENCY page (docs/worker.md): the numbers called in turn
        # (unset: ON_CALL_NUMBERS, in order) and when.
        "ON_CALL_ROTA": env("ON_CALL_ROTA", ""),
        "VOICE_IF_UNDELIVERED_MINUTES": _int_("VOICE_IF_UNDELIVERED_MINUTES", 2),
        "VOICE_IF_UNACKNOWLEDGED_MINUTES": _int_("VOICE_IF_UNACKNOWLEDGED_MINUTES", 5),
        "VOICE_MAX_CALLS": _int_("VOICE_MAX_CALLS", 6),
        "VOICE_RING_SECONDS": _int_("VOICE_RING_SECONDS", 30),
        "VOICE_STEP_TIMEOUT_SECONDS": _int_("VOICE_STEP_TIMEOUT_SECONDS", 180),
        "SECRET_KEY": env("SECRET_KEY", ""),
        # Behaviour
        "FLOWS_DIR": env("FLOWS_DIR", str(default_flows_dir())),
        "SESSION_TTL_HOURS": _int_("SESSION_TTL_HOURS", 24),
        "ABANDON_AFTER_MINUTES": _int_("ABANDON_AFTER_MINUTES", 15),
        "ACK_DEADLINE_MINUTES": _int_("ACK_DEADLINE_MINUTES", 15),
        "FOLLOW_UP_AFTER_MINUTES": _int_("FOLLOW_UP_AFTER_MINUTES", 60),
        "PAGE_MAX_ATTEMPTS": _int_("PAGE_MAX_ATTEMPTS", 6),
        "PAGE_RETRY_SECONDS": _int_("PAGE_RETRY_SECONDS", 30),
        "WORKER_TICK_SECONDS": _int_("WORKER_TICK_SECONDS", 15),
        "WORKER_NAME": env("WORKER_NAME", ""),
        # Care-team read indexes (bot/indexes.py) keep this many days; docs/performance.md
        "RECORD_INDEX_RETENTION_DAYS": _int_("RECORD_INDEX_RETENTION_DAYS", 400),
        # Finished records older than this leave Redis, exported to EXPORT_DIR first
        # (bot/retention.py; 0 keeps them all). EXPORT_DIR holds patient data: unset means
        # exports/ under INSTANCE_PATH.
        "RECORD_RETENTION_DAYS": _int_("RECORD_RETENTION_DAYS", 400),
        "EXPORT_DIR": env("EXPORT_DIR", ""),
        "DEDUP_TTL_HOURS": _int_("DEDUP_TTL_HOURS", 48),
        # Per-number inbound rate limit (issue 8 item 4): past this many texts in the window,
        # a text without a red flag (and not answering a pending question) gets no engine
        # turn and at most one short reply per window. 0 turns it off.
        "RATE_LIMIT_TEXTS": _int_("RATE_LIMIT_TEXTS", 20),
        "RATE_LIMIT_WINDOW_SECONDS": _int_("RATE_LIMIT_WINDOW_SECONDS", 600),
        "MAX_BODY_CHARS": _int_("MAX_BODY_CHARS", 1600),
        "LOG_LEVEL": env("LOG_LEVEL", "INFO"),
        # Web hardening: how many reverse proxies in front set X-Forwarded-For/-Proto (0: none,
        # the headers are ignored); the largest request body accepted (bytes), checked before
        # anything reads the body.
        "PROXY_FIX_HOPS": _int_("PROXY_FIX_HOPS", 0),
        "MAX_CONTENT_LENGTH": _int_("MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH),
        # The dashboard shows every time in the clinic's zone (IANA name), the zone beside it.
        "CLINIC_TIMEZONE": env("CLINIC_TIMEZONE", DEFAULT_CLINIC_TIMEZONE),
    }
