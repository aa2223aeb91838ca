"""The care team's patient profile (clinical-rules.md, "What the care team records").

Stored as the hash ``triage:{<phone>}:profile``; every enrolled phone is in the set
``triage:patients``. One field spec, used by the command-line tool, the JSON API and the
dashboard's registry pages, so all three validate the same way.
"""

from __future__ import annotations

import re
import time
from datetime import date
from typing import Any

import redis

from . import keys

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import PATIENTS  # noqa: F401
from .profile_fields import BY_NAME, CAREGIVER_RELATIONSHIPS, FIELDS, MRN_RE, Field
from .store import profile_key

__all__ = ["BY_NAME", "CAREGIVER_RELATIONSHIPS", "FIELDS", "MRN_RE", "Field", "ProfileError"]

PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164, as Twilio sends From




class ProfileError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def valid_phone(phone: str) -> bool:
    return bool(PHONE_RE.match(phone or ""))


def clean(values: dict[str, Any]) -> dict[str, str]:
    """Validate and normalise submitted values; empty strings clear a field. Raises
    ProfileError with a message per bad field."""
    out: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key, raw in values.items():
        spec = BY_NAME.get(key)
        if spec is None:
            errors[key] = "unknown field"
            continue
        value = "" if raw is None else str(raw).strip()
        if value == "":
            out[key] = ""
            continue
        if spec.kind == "date":
            try:
                day = date.fromisoformat(value)
            except ValueError:
                errors[key] = "must be a date like 2026-11-24"
                continue
            if spec.past and not date(1900, 1, 1) <= day <= date.today():
                errors[key] = "must be a past date (after 1900)"
                continue
            value = day.isoformat()
        elif spec.kind == "choice" and value not in spec.choices:
            errors[key] = f"must be one of {', '.join(spec.choices)}"
            continue
        elif spec.kind == "yesno":
            lowered = value.lower()
            if lowered in ("yes", "true", "1", "y", "on"):
                value = "yes"
            elif lowered in ("no", "false", "0", "n", "off"):
                value = "no"
            else:
                errors[key] = "must be yes or no"
                continue
        elif spec.kind == "int":
            try:
                number = int(value)
            except ValueError:
                errors[key] = "must be a whole number"
                continue
            if (spec.minimum is not None and number < spec.minimum) or (
                    spec.maximum is not None and number > spec.maximum):
                errors[key] = f"must be between {spec.minimum} and {spec.maximum}"
                continue
            value = str(number)
        elif spec.kind == "phone":
            compact = re.sub(r"[\s().-]", "", value)
            if not valid_phone(compact):
                errors[key] = "must be a phone number like +15551234567"
                continue
            value = compact
        elif len(value) > 200:
            errors[key] = "is too long (200 characters at most)"
            continue
        elif spec.pattern and not re.fullmatch(spec.pattern, value):
            errors[key] = f"must be {spec.hint}" if spec.hint else "is not in the right form"
            continue
        out[key] = value
    if errors:
        raise ProfileError(errors)
    return out


def get(r: redis.Redis, phone: str) -> dict[str, str]:
    return r.hgetall(profile_key(phone))


def save(r: redis.Redis, phone: str, values: dict[str, Any]) -> dict[str, str]:
    """Merge validated values into the profile (empty values delete the field)."""
    if not valid_phone(phone):
        raise ProfileError({"phone": "must be a phone number like +15551234567"})
    cleaned = clean(values)
    key = profile_key(phone)
    names = keys.of(r)
    if names.cluster:  # the register is in the slot of {triage}, the profile in the patient's
        r.sadd(names.PATIENTS, phone)  # first: an enrolled number is never missing from it
    pipe = r.pipeline(transaction=True)
    to_set = {k: v for k, v in cleaned.items() if v != ""}
    to_del = [k for k, v in cleaned.items() if v == ""]
    if to_set:
        pipe.hset(key, mapping=to_set)
    if to_del:
        pipe.hdel(key, *to_del)
    pipe.hsetnx(key, "status", "active")
    pipe.hset(key, "updated_at", f"{time.time():.0f}")
    if not names.cluster:
        pipe.sadd(names.PATIENTS, phone)
    pipe.execute()
    return get(r, phone)


def all_phones(r: redis.Redis) -> list[str]:
    return sorted(r.smembers(keys.of(r).PATIENTS))
