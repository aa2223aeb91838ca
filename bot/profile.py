"""The care team's patient profile (clinical-rules.md, "What the care team records").

Stored as the hash ``triage:{<phone>}:profile``; every enrolled phone is in the set
``triage:patients``. One field spec, used by the command-line tool, the JSON API and the
dashboard's registry pages, so all three validate the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import redis

from .store import profile_key

PATIENTS = "triage:patients"
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164, as Twilio sends From


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str  # text | date | choice | yesno | int | phone
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None  # text: a regular expression the whole value must match
    hint: str = ""  # what a valid value looks like (the error message and the form)
    past: bool = False  # date: today or earlier, and not before 1900


MRN_RE = r"[A-Za-z0-9][A-Za-z0-9-]{2,19}"
CAREGIVER_RELATIONSHIPS = ("parent", "guardian", "spouse_or_partner", "adult_child", "sibling",
                           "grandparent", "other_relative", "friend", "other")

FIELDS: tuple[Field, ...] = (
    Field("name", "Name", "text"),
    Field("date_of_birth", "Date of birth", "date", past=True),
    Field("mrn", "Medical record number (MRN)", "text", pattern=MRN_RE,
          hint="3-20 letters, digits or '-', like MRN-004512"),
    Field("status", "Status", "choice", ("active", "paused", "discharged")),
    Field("caregiver_name", "Caregiver's name", "text"),
    Field("caregiver_relationship", "Caregiver's relationship to the patient", "choice",
          CAREGIVER_RELATIONSHIPS),
    Field("caregiver_phone", "Caregiver's phone number", "phone"),
    Field("treatment_phase", "Treatment phase", "choice",
          ("induction", "consolidation", "intensification", "delayed_intensification",
           "interim_maintenance", "maintenance", "reinduction", "relapse", "off_treatment",
           "car_t", "blinatumomab", "transplant", "other")),
    Field("last_chemo_date", "Date of last chemotherapy", "date"),
    Field("low_neutrophils", "Known neutrophils < 0.5 x10^9/L", "yesno"),
    Field("low_platelets", "Known low platelets", "choice", ("no", "lt50", "lt20")),
    Field("t_cell_or_mediastinal_mass", "T-cell ALL or mediastinal mass", "yesno"),
    Field("car_t_date", "CAR T-cell infusion date", "date"),
    Field("blinatumomab_active", "Blinatumomab infusion running now", "yesno"),
    Field("blinatumomab_start_date", "Blinatumomab cycle start date", "date"),
    Field("blinatumomab_cycle", "Blinatumomab cycle", "int", minimum=1, maximum=20),
    Field("blinatumomab_day", "Blinatumomab day of cycle", "int", minimum=1, maximum=60),
    Field("blinatumomab_home_pump", "Blinatumomab pump at home", "yesno"),
    Field("age_band", "Age band", "choice", ("child", "teen", "adult")),
    Field("usual_ice_score", "Usual ICE score (0-10)", "int", minimum=0, maximum=10),
    Field("language", "Preferred language", "text"),
    Field("oncology_line", "24-hour line number for this patient", "phone"),
)
BY_NAME = {f.name: f for f in FIELDS}


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
    pipe = r.pipeline(transaction=True)
    to_set = {k: v for k, v in cleaned.items() if v != ""}
    to_del = [k for k, v in cleaned.items() if v == ""]
    if to_set:
        pipe.hset(key, mapping=to_set)
    if to_del:
        pipe.hdel(key, *to_del)
    pipe.hsetnx(key, "status", "active")
    pipe.hset(key, "updated_at", f"{time.time():.0f}")
    pipe.sadd(PATIENTS, phone)
    pipe.execute()
    return get(r, phone)


def all_phones(r: redis.Redis) -> list[str]:
    return sorted(r.smembers(PATIENTS))
