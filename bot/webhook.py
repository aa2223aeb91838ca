"""``POST /sms``: Twilio's webhook. ``GET /healthz``: is Redis answering.

Never answers 500: whatever goes wrong after the signature check, the patient gets a TwiML
message that tells them whom to call (and red-flag words are still recognised without Redis).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from .breaker import StoreUnavailable
from .conversation.engine import Opt
from .service import TriageService
from .sms import to_gsm7
from .store import mask_phone

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)


def service() -> TriageService:
    return current_app.extensions["triage"]


def signed_url() -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL + path + query when set (behind a proxy or
    tunnel the Host header is not the public one), else the URL as Flask sees it."""
    base = current_app.config.get("PUBLIC_BASE_URL")
    if not base:
        return request.url
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


def signature_ok() -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = RequestValidator(current_app.config["TWILIO_AUTH_TOKEN"])
    return validator.validate(signed_url(), request.form, signature)


def twiml(text: str | None) -> Response:
    resp = MessagingResponse()
    if text:
        resp.message(text)
    return Response(str(resp), status=200, mimetype="text/xml")


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


@bp.post("/sms")
def sms() -> Response:
    if not signature_ok():
        log.warning("refused /sms: bad or missing X-Twilio-Signature")
        abort(403)
    form = request.form
    phone = (form.get("From") or "").strip()[:32]
    body = form.get("Body") or ""
    sid = (form.get("MessageSid") or "").strip()[:64] or None
    num_media = _int(form.get("NumMedia"))
    svc = service()
    if not phone:
        return twiml(svc.engine.msg["help"])
    try:
        saved = svc.handle_sms(phone, sid, body, num_media)
    except StoreUnavailable as exc:
        # Redis down or stalled: answer now (within one socket timeout, or at once when the
        # breaker is open), and keep the text on disk to be replayed when Redis returns.
        spooled = svc.spool_inbound(phone, sid, body, num_media)
        log.warning("Redis unavailable (%s): fallback reply to %s, text %s", exc,
                    mask_phone(phone), "spooled" if spooled else "NOT spooled")
        return twiml(fallback_reply(svc, body))
    except Exception:
        log.exception("could not process a message from %s", mask_phone(phone))
        return twiml(fallback_reply(svc, body))
    svc.replay_in_background()  # texts spooled during an outage, now that Redis answers
    return twiml(saved.reply)


def fallback_reply(svc: TriageService, body: str) -> str:
    """Redis is down, or a bug: still tell the patient what to do, red flags first."""
    engine = svc.engine
    try:
        flags = engine.read(body).current("red_flag")
    except Exception:  # pragma: no cover - reading is pure, but never let it raise here
        flags = []
    if flags:
        advice = list(dict.fromkeys(engine.red_flag_by_id[f.concept].advice for f in flags))
        return to_gsm7(engine.compose(engine.fill(engine.msg["red_flag"]),
                                      *(Opt(engine.fill(a)) for a in advice)))
    return to_gsm7(engine.fill(engine.msg["store_down"]))


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Redis (503 when it does not answer), the worker's heartbeat (silent for more than
    60 s: degraded), dead-lettered records, texts spooled during an outage, the breaker."""
    from .worker import health

    svc = service()
    ok = svc.store.ping()
    body: dict[str, object] = {"redis": "ok" if ok else "down",
                               "breaker": svc.breaker.snapshot()["state"]}
    if ok:
        body.update(health(svc.store.r))
    if svc.spool is not None:
        body["spooled"] = svc.spool.count()
        body["unreplayable"] = svc.spool.unreplayable()
    alarms = [k for k in ("worker_silent", "dead_letters", "spooled", "unreplayable")
              if body.get(k)]
    body["status"] = "ok" if ok and not alarms else "degraded"
    body["alarms"] = alarms
    return jsonify(body), 200 if ok else 503
