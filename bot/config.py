"""Settings, read from the environment; ``create_app(overrides)`` wins over both.

Every setting is listed in ``.env.example`` and the README's settings table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLINIC_TIMEZONE = "America/New_York"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:  # a typo in a setting must fail loudly at start-up
        raise RuntimeError(f"setting {name} must be a whole number, got {raw!r}") from exc


def clinic_zone(name: str | None) -> ZoneInfo:
    """The clinic's time zone; an unknown name stops the service at start-up (a nurse must
    never read a time in a zone she did not expect)."""
    name = (name or "").strip() or DEFAULT_CLINIC_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RuntimeError(f"setting CLINIC_TIMEZONE must be an IANA time zone such as "
                           f"America/New_York or Europe/London, got {name!r}") from exc


def from_environment() -> dict[str, Any]:
    env = os.environ.get
    return {
        # Redis: unset means "start an embedded redis-server under INSTANCE_PATH".
        "REDIS_URL": env("REDIS_URL", "").strip() or None,
        "INSTANCE_PATH": env("INSTANCE_PATH", str(ROOT / "instance")),
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
        "SECRET_KEY": env("SECRET_KEY", ""),
        # Behaviour
        "FLOWS_DIR": env("FLOWS_DIR", str(ROOT / "flows")),
        "SESSION_TTL_HOURS": _int("SESSION_TTL_HOURS", 24),
        "ABANDON_AFTER_MINUTES": _int("ABANDON_AFTER_MINUTES", 15),
        "ACK_DEADLINE_MINUTES": _int("ACK_DEADLINE_MINUTES", 15),
        "FOLLOW_UP_AFTER_MINUTES": _int("FOLLOW_UP_AFTER_MINUTES", 60),
        "PAGE_MAX_ATTEMPTS": _int("PAGE_MAX_ATTEMPTS", 6),
        "PAGE_RETRY_SECONDS": _int("PAGE_RETRY_SECONDS", 30),
        "WORKER_TICK_SECONDS": _int("WORKER_TICK_SECONDS", 15),
        "WORKER_NAME": env("WORKER_NAME", "").strip(),
        "DEDUP_TTL_HOURS": _int("DEDUP_TTL_HOURS", 48),
        "MAX_BODY_CHARS": _int("MAX_BODY_CHARS", 1600),
        "LOG_LEVEL": env("LOG_LEVEL", "INFO"),
        # The dashboard shows every time in the clinic's zone (IANA name), the zone beside it.
        "CLINIC_TIMEZONE": env("CLINIC_TIMEZONE", "").strip() or DEFAULT_CLINIC_TIMEZONE,
    }
