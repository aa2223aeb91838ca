"""Patient context as facts the checklists can test (``only_if``, rule ``when``, menu order).

The care team's profile (``bot/profile.py``) becomes a few ``ctx_*`` facts, so the flow files
stay the only place where clinical choices live. The rule: unknown context never lowers a tier,
so every fact here is set only when the profile says so; a flow that needs "known normal" tests
for it explicitly (``ctx_platelets_ok``) and treats its absence as the worse case.

| fact | set when |
|---|---|
| ``ctx_registered`` / ``ctx_unregistered`` | the number has / has no profile |
| ``ctx_risk_window`` | risk_window() finds any window of rule 3 |
| ``ctx_car_t_window`` | CAR T-cell infusion within ``car_t_crs.days`` (flows/windows.yaml) |
| ``ctx_car_t_neuro_window`` | CAR T-cell infusion within ``car_t_icans.days`` (ICANS) |
| ``ctx_blinatumomab`` | blinatumomab infusion running now |
| ``ctx_blinatumomab_early`` | ... and cycle 1, within ``blinatumomab_early.days`` |
| ``ctx_home_pump`` / ``ctx_no_home_pump`` | the profile says yes / no to a pump at home |
| ``ctx_t_cell_mass`` | T-cell ALL or a mediastinal mass |
| ``ctx_platelets_lt50`` | known platelets < 50k (lt50 or lt20) |
| ``ctx_platelets_lt20`` | known platelets < 20k |
| ``ctx_platelets_ok`` | the profile says platelets are not low |
| ``ctx_child`` / ``ctx_age_12_plus`` | age band child / teen or adult |
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from .flows import Windows

# The windows' lengths in days are clinical numbers: they live in flows/windows.yaml.

YES = ("yes", "true", "1")


def _days_since(value: str | None, today: date) -> int | None:
    if not value:
        return None
    try:
        return (today - date.fromisoformat(value)).days
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def risk_window(profile: dict[str, str], now: float, w: Windows) -> list[str]:
    """Which risk windows of rule 3 the profile puts the patient in (empty: none known)."""
    today = datetime.fromtimestamp(now, UTC).date()
    windows = []
    if profile.get("treatment_phase", "") in w.chemo_phases:
        windows.append(f"on chemotherapy ({profile['treatment_phase']})")
    days = _days_since(profile.get("last_chemo_date"), today)
    if days is not None and 0 <= days <= w.chemo_days:
        windows.append(f"chemotherapy {days} days ago")
    if profile.get("low_neutrophils") in YES:
        windows.append("known neutrophils < 0.5")
    days = _days_since(profile.get("car_t_date"), today)
    if days is not None and 0 <= days <= w.car_t_crs_days:
        windows.append(f"CAR T-cell day {days}")
    if profile.get("blinatumomab_active") in YES:
        windows.append("during a blinatumomab infusion")
    return windows


def context_facts(profile: dict[str, str], now: float, windows: list[str], w: Windows
                  ) -> list[str]:
    """The ``ctx_*`` facts for one patient, from the profile and the rule-3 windows."""
    today = datetime.fromtimestamp(now, UTC).date()
    facts = ["ctx_registered" if profile else "ctx_unregistered"]
    if windows:
        facts.append("ctx_risk_window")
    days = _days_since(profile.get("car_t_date"), today)
    if days is not None and 0 <= days <= w.car_t_crs_days:
        facts.append("ctx_car_t_window")
    if days is not None and 0 <= days <= w.car_t_icans_days:
        facts.append("ctx_car_t_neuro_window")
    if profile.get("blinatumomab_active") in YES:
        facts.append("ctx_blinatumomab")
        cycle, day = _int(profile.get("blinatumomab_cycle")), _int(profile.get("blinatumomab_day"))
        # Unknown cycle or day: take the higher-risk reading (first 2 weeks of cycle 1).
        if (cycle in (None, 1)) and (day is None or day <= w.blinatumomab_early_days):
            facts.append("ctx_blinatumomab_early")
    pump = profile.get("blinatumomab_home_pump")
    if pump in YES:
        facts.append("ctx_home_pump")
    elif pump == "no":
        facts.append("ctx_no_home_pump")
    if profile.get("t_cell_or_mediastinal_mass") in YES:
        facts.append("ctx_t_cell_mass")
    platelets = profile.get("low_platelets")
    if platelets in ("lt50", "lt20"):
        facts.append("ctx_platelets_lt50")
    if platelets == "lt20":
        facts.append("ctx_platelets_lt20")
    if platelets == "no":
        facts.append("ctx_platelets_ok")
    band = profile.get("age_band")
    if band == "child":
        facts.append("ctx_child")
    elif band in ("teen", "adult"):
        facts.append("ctx_age_12_plus")
    return facts


def usual_scores(profile: dict[str, str]) -> dict[str, int]:
    """Profile fields a checklist score may be compared with (``scores[].usual.profile``)."""
    out: dict[str, int] = {}
    for key, value in profile.items():
        number = _int(value) if key.startswith("usual_") else None
        if number is not None:
            out[key] = number
    return out


def engine_context(profile: dict[str, str], now: float, windows: list[str], w: Windows
                   ) -> dict[str, Any]:
    """What the engine keeps in the session about the patient: facts and usual scores only
    (no name, no phone)."""
    return {"facts": context_facts(profile, now, windows, w), "usual": usual_scores(profile)}


def patient_context(profile: dict[str, str], now: float, w: Windows) -> dict[str, Any]:
    """Everything the service passes to ``Engine.handle`` as ``profile``: the profile's fields,
    its rule-3 windows (``risk_windows``, words for the care team), and the engine's facts."""
    windows = risk_window(profile, now, w)
    return {**profile, "risk_window": bool(windows), "risk_windows": windows,
            "registered": bool(profile), "ctx": engine_context(profile, now, windows, w)}
