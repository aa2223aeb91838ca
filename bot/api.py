"""``/api/*``: JSON for the care team's systems, behind ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hmac
import time
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import indexes
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
    return jsonify({"escalations": records})


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
