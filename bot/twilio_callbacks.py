"""Twilio's callbacks about what the service sent, and the delivery JSON for the care team.

* ``POST /twilio/status/<record id>/<recipient id>``: a text's delivery status (the
  ``StatusCallback`` of every page and follow-up, see ``notify.Receipts``);
* ``POST /twilio/voice/<record id>/<step>/status``: an escalation call's final status;
* ``POST /twilio/voice/<record id>/<step>/gather``: the key pressed during it (1 acknowledges);
* ``GET /api/escalations/<record id>/delivery``: per recipient delivery and the voice ladder,
  behind the API's bearer token.

Every POST is checked with Twilio's RequestValidator exactly like the inbound ``/sms`` webhook
(``webhook.signature_ok``: X-Twilio-Signature over PUBLIC_BASE_URL + path and the form); a
missing or wrong signature is refused with 403. The URLs carry a record id and a recipient id
or step number, never a phone number. These routes only record what Twilio says; the worker
alone places calls. They are exempt from the dashboard's CSRF check (signed instead).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request

from . import notify, voice
from .api import require_token
from .escalations import add_event
from .store import Store
from .webhook import signature_ok

log = logging.getLogger(__name__)
bp = Blueprint("twilio_callbacks", __name__, url_prefix="/twilio")
api_bp = Blueprint("delivery_api", __name__, url_prefix="/api")

RCPT_RE = re.compile(r"^[0-9a-f]{12}$")
WHO = "twilio"  # the "who" of events a callback adds


def register(app: Flask) -> None:
    """Register both blueprints; the Twilio callbacks are signed, not CSRF-protected forms."""
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)


def _store() -> Store:
    return current_app.extensions["triage"].store


def _verified(rid: str) -> Any:
    """403 unless Twilio signed this request; 404 unless ``rid`` is a record."""
    if not signature_ok():
        log.warning("refused %s: bad or missing X-Twilio-Signature", request.path)
        abort(403)
    if not voice.RID_RE.match(rid):
        abort(404)
    store = _store()
    if store.record(rid) is None:
        abort(404)
    return store


def _twiml(text: str) -> Response:
    return Response(text, status=200, mimetype="text/xml")


@bp.post("/status/<rid>/<rcpt>")
def sms_status(rid: str, rcpt: str) -> Response:
    store = _verified(rid)
    if not RCPT_RE.match(rcpt):
        abort(404)
    form = request.form
    sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
    raw = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip()
    error = re.sub(r"\D", "", form.get("ErrorCode") or "")[:8]
    now = time.time()
    receipts = notify.Receipts(store.r, current_app.config.get("PUBLIC_BASE_URL") or "",
                               current_app.config["SECRET_KEY"])
    result = receipts.update(rid, rcpt, sid, raw, error, now)
    if result is None:
        log.warning("delivery callback for %s: message does not belong to that recipient", rid)
        abort(404)
    shown = result["status"]
    if result["changed"] and shown in (notify.DELIVERED, *notify.NOT_DELIVERED):
        what = "page" if result["role"] == notify.ON_CALL else "follow-up text"
        detail = f" (error {error})" if error and shown != notify.DELIVERED else ""
        add_event(store.r, rid, "sms_delivered" if shown == notify.DELIVERED else
                  "sms_not_delivered", WHO, f"{what} to {result['to']}: {shown}{detail}", now)
        log.info("delivery of %s to %s: %s", rid, result["to"], shown)
        if shown in notify.NOT_DELIVERED and result["role"] == notify.ON_CALL:
            # an EMERGENCY ladder that is watching looks again now (it may need to call)
            store.r.zadd(store.names.VOICE_DUE, {rid: now}, xx=True)
    return Response(status=204)


@bp.post("/voice/<rid>/<int:step>/status")
def call_status(rid: str, step: int) -> Response:
    store = _verified(rid)
    if not voice.call_status(store.r, rid, step, request.form.get("CallStatus") or "",
                             time.time()):
        abort(404)
    return Response(status=204)


@bp.post("/voice/<rid>/<int:step>/gather")
def call_gather(rid: str, step: int) -> Response:
    store = _verified(rid)
    answer = voice.gather(store.r, rid, step, request.form.get("Digits") or "", time.time())
    if answer is None:
        abort(404)
    return _twiml(answer)


@api_bp.get("/escalations/<rid>/delivery")
@require_token
def delivery(rid: str) -> Any:
    """Per recipient delivery of the record's texts, and the voice escalation ladder."""
    store = _store()
    if not voice.RID_RE.match(rid) or store.record(rid) is None:
        return jsonify({"error": "no such escalation"}), 404
    return jsonify({"id": rid, "delivery": notify.delivery(store.r, rid),
                    "voice": voice.summary(store.r, rid)})
