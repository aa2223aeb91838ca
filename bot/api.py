"""``/api/*``: JSON for the care team's systems, behind ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hmac
import time
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import escalations as esc_store
from . import indexes, keys
from .conversation.flows import TIERS

bp = Blueprint("api", __name__, url_prefix="/api")
STATUSES = ("open", "acknowledged", "resolved")
MAX_LIMIT = 1000


def error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def require_token(view: Any) -> Any:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        expected = current_app.config["CARE_TEAM_API_TOKEN"]
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                  expected.encode()):
            resp, status = error(401, "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp, status
        return view(*args, **kwargs)
    return wrapped


def require_token_or_login(view: Any) -> Any:
    """The bearer token, as every /api route; or a signed-in dashboard user (the dashboard's
    banner links here), audited."""
    token_view = require_token(view)

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if request.headers.get("Authorization"):
            return token_view(*args, **kwargs)
        from . import audit
        from .dashboard.auth import signed_in_user

        user = signed_in_user()
        if user is None:
            return token_view(*args, **kwargs)  # 401, as without a token
        audit.log(current_app.extensions["triage"].store.r, user.username,
                  "view_" + request.path.rstrip("/").rsplit("/", 1)[-1], request.path)
        return view(*args, **kwargs)
    return wrapped


@bp.get("/deadletters")
@require_token_or_login
def deadletters() -> Any:
    """Records the worker could not read, set aside on the dead-letter list (newest first),
    with anything that could be a phone number masked. ``?limit=`` (default 100)."""
    from .paging import dead_letters

    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        return error(400, "limit must be a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit must be between 1 and {MAX_LIMIT}")
    r = current_app.extensions["triage"].store.r
    return jsonify({"count": int(r.llen(keys.of(r).DEAD_LETTERS)),
                    "dead_letters": dead_letters(r, limit)})


@bp.get("/escalations")
@require_token
def escalations() -> Any:
    tiers = [t.upper() for t in request.args.getlist("tier")]
    bad = [t for t in tiers if t not in TIERS]
    if bad:
        return error(400, f"unknown tier {bad[0]!r}; use {', '.join(TIERS)}")
    status = request.args.get("status") or None
    if status and status not in STATUSES:
        return error(400, f"unknown status {status!r}; use {', '.join(STATUSES)}")
    try:
        limit = int(request.args.get("limit", 200))
    except ValueError:
        return error(400, "limit must be a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit must be between 1 and {MAX_LIMIT}")
    store = current_app.extensions["triage"].store
    phone = (request.args.get("phone") or "").strip()
    if phone:  # the patient's own index: the cost of this patient's history, not everyone's
        records = indexes.patient_records(store.r, phone, tiers=tiers, status=status,
                                          limit=limit)
    else:
        records = store.records(tiers=tiers, status=status, limit=limit)
    return jsonify({"escalations": fold(store, records, tiers)})


def fold(store: Any, records: list[dict[str, Any]], tiers: list[str]) -> list[dict[str, Any]]:
    """One entry per escalation: a record merged into its conversation's open escalation
    (``paging.py``) is shown once, inside it (``merged``), and an escalation raised in place
    shows its tier now (``tier``; the record's own in ``record_tier``, ``raised_from``). The
    tier filter applies to the escalation's tier. Records the worker has not routed yet are
    shown as they are."""
    if not records:
        return []
    pipe = store.r.pipeline(transaction=False)
    for rec in records:
        pipe.hmget(keys.of(store.r).esc_key(rec["id"]), "merged_into", "escalation_tier",
                   "raised_from")
    found = {rec["id"]: dict(zip(("merged_into", "escalation_tier", "raised_from"), got,
                                 strict=True))
             for rec, got in zip(records, pipe.execute(), strict=True)}
    out: list[dict[str, Any]] = []
    shown: set[str] = set()
    for rec in records:
        holder = found[rec["id"]]["merged_into"]
        rid = holder or rec["id"]
        if rid in shown:
            continue
        if holder:
            head = store.record(holder)
            if head is None:  # the escalation's record is gone: show the record itself
                head, rid = rec, rec["id"]
            esc = esc_store.details(store.r, rid)
        else:
            head, esc = rec, found[rid]
        shown.add(rid)
        entry = dict(head)
        entry["record_tier"] = head.get("tier")
        entry["tier"] = esc_store.escalation_tier(head, esc)
        if esc.get("raised_from"):
            entry["raised_from"] = esc["raised_from"]
        if not tiers or entry["tier"] in tiers:
            out.append(entry)
    pipe = store.r.pipeline(transaction=False)
    for entry in out:
        pipe.smembers(keys.of(store.r).members_key(entry["id"]))
    for entry, members in zip(out, pipe.execute(), strict=True):
        entry["merged"] = sorted(members)
    return out


@bp.get("/patients/<phone>")
@require_token
def patient(phone: str) -> Any:
    """The care team's profile of one patient, with the risk windows it puts them in."""
    from . import profile as profiles

    phone = phone.strip()
    if not profiles.valid_phone(phone):
        return jsonify({"errors": {"phone": "must be a phone number like +15551234567"}}), 400
    values = profiles.get(current_app.extensions["triage"].store.r, phone)
    if not values:
        return error(404, "no profile for this number")
    return jsonify({"phone": phone, "profile": values,
                    "risk_windows": _windows(values)})


@bp.put("/patients/<phone>")
@require_token
def put_patient(phone: str) -> Any:
    """Create or update a profile: a JSON object of fields; an empty string clears a field.
    400 with ``{"errors": {field: message}}`` and nothing saved if any field is wrong."""
    from . import profile as profiles

    phone = phone.strip()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify({"errors": {"body": "must be a JSON object of profile fields"}}), 400
    try:
        values = profiles.save(current_app.extensions["triage"].store.r, phone, body)
    except profiles.ProfileError as exc:
        return jsonify({"errors": exc.errors}), 400
    return jsonify({"phone": phone, "profile": values,
                    "risk_windows": _windows(values)})


def _windows(profile: dict[str, str]) -> list[str]:
    """The rule-3 risk windows a profile puts the patient in, as words."""
    engine = current_app.extensions["triage"].engine
    return list(engine.patient_context(profile, time.time())["risk_windows"])
