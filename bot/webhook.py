"""``POST /sms``: Twilio's webhook. ``GET /healthz``: is Redis answering.

Never answers 500: whatever goes wrong after the signature check, the patient gets a TwiML
message that tells them whom to call (and red-flag words are still recognised without Redis).

**The pending question, without Redis.** Twilio keeps the HTTP cookies a messaging webhook
sets and sends them back with the conversation's next messages (for up to 4 hours). Every
reply sets ``triage_q``: the conversation's state id (``fever:danger_signs``: a flow and a
question id, no patient data), when it was issued, and an HMAC-SHA256 of both and the
sender's number keyed by ``SECRET_KEY`` (the number is not in the cookie; a cookie replayed
from another conversation, altered, or older than 4 hours is ignored). When Redis cannot be
reached, the fallback reads it: if the pending question is a yes/no or pick-from-a-list
question whose answer alone makes an EMERGENCY (an answer that sets a fact an EMERGENCY rule of
the checklist needs and nothing else: the EMERGENCY screens), and the text gives that answer,
the reply is "Call 911 now." with the rule's advice. The text is spooled as every text during
an outage is, and replayed through the engine (the record) when Redis answers again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from functools import lru_cache
from typing import Any
from xml.sax.saxutils import escape as xml_escape  # nosec B406 # escapes text we write

from flask import Blueprint, Response, abort, current_app, jsonify, request
from twilio.request_validator import RequestValidator
from werkzeug.http import http_date

from .breaker import StoreUnavailable
from .conversation.engine import Opt
from .service import TriageService
from .sms import to_gsm7
from .store import mask_phone
from .worker import health  # imported before gunicorn forks: a first /healthz is not slower

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)
PENDING_COOKIE = "triage_q"
PENDING_MAX_AGE = 4 * 3600  # Twilio keeps a conversation's cookies at most 4 hours


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


@lru_cache(maxsize=4)
def _validator(token: str) -> RequestValidator:
    return RequestValidator(token)


def signature_ok() -> bool:
    """Twilio's ``RequestValidator``. ``validate`` always computes two signatures (the URL
    with and without its port, one of which is the URL itself); the URL as it is comes first
    here, one HMAC in the common case, and only a mismatch runs the library's whole check."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = _validator(current_app.config["TWILIO_AUTH_TOKEN"])
    url, form = signed_url(), request.form
    if hmac.compare_digest(validator.compute_signature(url, form).encode(),
                           signature.encode(errors="replace")):
        return True
    return validator.validate(url, form, signature)


_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'
_TWIML_MESSAGE = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>{}</Message></Response>'


def twiml_text(text: str | None) -> str:
    """Exactly what twilio's ``MessagingResponse`` (``.message(text)``) prints, without
    building an ElementTree for one element (a tenth of the cost; tests/test_webhook.py checks
    the two agree on every patient-facing text and on arbitrary ones)."""
    if not text:
        return _TWIML_EMPTY
    return _TWIML_MESSAGE.format(xml_escape(text))


def twiml(text: str | None) -> Response:
    return Response(twiml_text(text), status=200, mimetype="text/xml")


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
        return twiml(fallback_reply(svc, body, pending_state(phone)))
    except Exception:
        log.exception("could not process a message from %s", mask_phone(phone))
        return twiml(fallback_reply(svc, body, pending_state(phone)))
    svc.replay_in_background()  # texts spooled during an outage, now that Redis answers
    resp = twiml(saved.reply)
    if not saved.duplicate:  # a retry's cached reply says nothing of the state now
        remember_state(resp, phone, _state_after(svc, phone, saved))
    return resp


# --------------------------------------------------------------------------- the cookie

def _state_after(svc: TriageService, phone: str, saved: Any) -> str | None:
    """The question pending after this message (``fever:danger_signs``): ``Saved.pending``
    (store.py, from ``Result.pending``). Until the store returns it, one read of the session
    (never allowed to fail the reply). "" when no question is pending; None when not known."""
    if hasattr(saved, "pending"):
        return saved.pending
    try:  # transitional: remove once store.Saved carries the pending question
        session = svc.store.session(phone)
    except Exception:
        return None
    return svc.engine.pending(session) or ""


def _mac(phone: str, state: str, issued: int) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    msg = f"triage-pending-question|{state}|{issued}|{phone}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:32]


def remember_state(resp: Response, phone: str, state: str | None,
                   now: float | None = None) -> None:
    """Set (or, with no question pending, clear) the signed pending-question cookie. A state
    not known (None: a message that ran no engine turn, such as one over a rate limit) leaves
    the cookie as it is."""
    if state is None:
        return
    secure = (current_app.config.get("PUBLIC_BASE_URL") or "").startswith("https://") \
        or request.is_secure
    if service().engine.question_at(state) is None:
        if PENDING_COOKIE in request.cookies:
            resp.delete_cookie(PENDING_COOKIE, path="/sms", secure=secure, httponly=True)
        return
    issued = int(time.time() if now is None else now)
    value = f"{state}|{issued}|{_mac(phone, state, issued)}"
    if _COOKIE_PLAIN.fullmatch(value):
        resp.headers.add("Set-Cookie", pending_cookie_header(value, secure))
    else:  # never for the flows' ids; werkzeug quotes what needs quoting
        resp.set_cookie(PENDING_COOKIE, value, max_age=PENDING_MAX_AGE, path="/sms",
                        secure=secure, httponly=True, samesite="Lax")


# A value werkzeug's dump_cookie writes as it is (state ids are [a-z0-9_] and ":").
_COOKIE_PLAIN = re.compile(r"[A-Za-z0-9_:.|-]{1,400}")


@lru_cache(maxsize=2)
def _expires(second: int) -> str:
    return http_date(second)


def pending_cookie_header(value: str, secure: bool, now: float | None = None) -> str:
    """The ``Set-Cookie`` value werkzeug's ``set_cookie`` writes for the pending-question
    cookie (``max_age=PENDING_MAX_AGE, path="/sms", httponly, samesite="Lax"``), written
    directly: on every reply, ``dump_cookie`` cost more than the rest of the cookie
    (tests/test_fallback_cookie.py checks the two agree). ``Expires`` is the real time now
    plus the maximum age, as werkzeug writes it."""
    expires = _expires(int(time.time() if now is None else now) + PENDING_MAX_AGE)
    return (f"{PENDING_COOKIE}={value}; Expires={expires}; Max-Age={PENDING_MAX_AGE}; "
            f"{'Secure; ' if secure else ''}HttpOnly; Path=/sms; SameSite=Lax")


def pending_state(phone: str, now: float | None = None) -> str | None:
    """The state id the cookie names, if it is authentic, for this number, and recent."""
    raw = request.cookies.get(PENDING_COOKIE) or ""
    try:
        state, issued_text, mac = raw.rsplit("|", 2)
        issued = int(issued_text)
    except ValueError:
        return None
    if not hmac.compare_digest(mac, _mac(phone, state, issued)):
        if raw:
            log.warning("ignored a pending-question cookie that does not verify (from %s)",
                        mask_phone(phone))
        return None
    age = (time.time() if now is None else now) - issued
    return state if -60 <= age <= PENDING_MAX_AGE else None


# --------------------------------------------------------------------------- the fallback

def emergency_rule(svc: TriageService, state: str | None, body: str) -> Any:
    """The EMERGENCY rule this text's answer to the pending question makes true on its own,
    or None. Only yes/no and pick-from-a-list questions; an unclear answer is None (the
    general fallback then tells the patient whom to call)."""
    engine = svc.engine
    found = engine.question_at(state) if state else None
    if found is None:
        return None
    flow, q = found
    if q.type not in ("yes_no", "choice", "multi_choice") or not q.sets:
        return None
    value = _answer(engine, q, body)
    if value is None:
        return None
    facts = {rule.fact for rule in q.sets if rule.when.holds(value)}
    for rule in flow.rules:
        if rule.tier == "EMERGENCY" and any(rule.when.holds({fact}) for fact in facts):
            return rule
    return None


def _answer(engine: Any, q: Any, body: str) -> Any:
    """The answer as the engine reads it (``Engine.parse_answer``)."""
    return engine.parse_answer(q, body)


def fallback_reply(svc: TriageService, body: str, state: str | None = None) -> str:
    """Redis is down, or a bug: still tell the patient what to do, red flags first, then an
    EMERGENCY answer to the question the signed cookie says was pending."""
    engine = svc.engine
    try:
        flags = engine.read(body).current("red_flag")
    except Exception:  # pragma: no cover - reading is pure, but never let it raise here
        flags = []
    if flags:
        advice = list(dict.fromkeys(engine.red_flag_by_id[f.concept].advice for f in flags))
        return to_gsm7(engine.compose(engine.fill(engine.msg["red_flag"]),
                                      *(Opt(engine.fill(a)) for a in advice)))
    try:
        rule = emergency_rule(svc, state, body)
    except Exception:  # never let the fallback fail; the general advice still goes
        log.exception("could not read the pending question in the fallback")
        rule = None
    if rule is not None:
        return to_gsm7(engine.compose(engine.fill(engine.msg["red_flag"]),
                                      Opt(engine.fill(rule.advice)),
                                      Opt(engine.fill(engine.msg["red_flag_after"]))))
    return to_gsm7(engine.fill(engine.msg["store_down"]))


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Redis (503 when it does not answer), the worker's heartbeat (silent for more than
    60 s: degraded), dead-lettered records, texts spooled during an outage, the breaker."""
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
