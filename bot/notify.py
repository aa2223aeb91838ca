"""Outbound SMS and voice calls: care-team pages, patient follow-ups, escalation calls; and
the delivery receipts Twilio sends back.

Two backends, chosen once at start-up by ``backend_for(app)``:

* ``TwilioBackend``: ``twilio.rest.Client(...).messages.create(to=, from_=, body=,
  status_callback=)`` and ``calls.create(to=, from_=, twiml=, status_callback=, timeout=)``,
  used when TWILIO_ACCOUNT_SID and TWILIO_FROM_NUMBER are both set (the auth token always is);
* ``ConsoleBackend``: prints the text, or what a call would say (number masked), instead of
  sending it, for local use.

A backend either returns a message (or call) id or raises ``SendError`` (whose text never holds
a whole phone number, so it can be shown on the dashboard and logged). Tests put their own
backend in ``app.extensions["sms"]``.

Delivery receipts (``Receipts``): every tracked SMS carries a Twilio ``StatusCallback`` URL,
``<PUBLIC_BASE_URL>/twilio/status/<record id>/<recipient id>``. The recipient id is an HMAC of
the number under SECRET_KEY (12 hex digits): it names the recipient without exposing the number.
Twilio's signed POSTs to that URL (``bot/twilio_callbacks.py``) move the message's status
forward only: queued -> sent -> delivered | undelivered | failed (a late "sent" after
"delivered" changes nothing). Kept in Redis:

``triage:esc:<id>:delivery``  hash  ``m:<MessageSid>`` -> the message's status and history,
                                    ``r:<recipient id>`` -> masked number, role, current sid
``triage:esc:<id>``           hash  ``delivery``: JSON list, one entry per recipient
                                    ({to, role, status, at, error, delivered_at}), rewritten
                                    with every change, for the dashboard and the API

``Outbox`` is what the worker sends through: the backend plus the receipts.

``text_patient`` is the only way the worker texts a patient: it sends, then appends the text to
the patient's transcript stream, so the dashboard shows every word the patient received.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
import time
import uuid
import xml.etree.ElementTree as ET  # nosec B405 # parses only TwiML this service built
from collections.abc import Callable
from typing import Any, Protocol, TextIO

import redis
from flask import Flask

from . import keys
from .clock import iso_utc as _iso

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import delivery_key  # noqa: F401
from .sms import to_gsm7
from .store import append_sent_text, mask_phone

log = logging.getLogger(__name__)

SEND_TIMEOUT = 15.0  # seconds
_NUMBER_RE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


class SendError(Exception):
    """The text was not accepted for delivery. ``str()`` is safe to log and to show."""


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number (Twilio errors quote the 'To' number)."""
    return _NUMBER_RE.sub(lambda m: mask_phone(re.sub(r"[^\d+]", "", m.group(0))), text)


class SmsBackend(Protocol):
    name: str

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        """Send one text; return the provider's message id or raise ``SendError``.
        ``status_callback``: the URL Twilio posts the message's delivery status to."""
        ...


class VoiceBackend(Protocol):
    def call(self, to: str, twiml: str, status_callback: str | None = None,
             ring_seconds: int = 30) -> str:
        """Place one call that runs ``twiml``; return the call id or raise ``SendError``.
        ``status_callback`` gets the call's final status (completed, no-answer, busy, ...)."""
        ...


class TwilioBackend:
    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, from_number: str,
                 client: Any = None):
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self.from_number = from_number
        # A bounded wait: a stalled connection must not hold up the worker's other jobs.
        self.client = client or Client(account_sid, auth_token,
                                       http_client=TwilioHttpClient(timeout=SEND_TIMEOUT))

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        from twilio.base.exceptions import TwilioException

        extra = {"status_callback": status_callback} if status_callback else {}
        try:
            message = self.client.messages.create(to=to, from_=self.from_number, body=body,
                                                  **extra)
        except TwilioException as exc:
            raise SendError(scrub(f"twilio: {exc}")[:300]) from None
        except OSError as exc:  # network down, DNS, TLS
            raise SendError(scrub(f"network: {exc}")[:300]) from None
        return str(message.sid)

    def call(self, to: str, twiml: str, status_callback: str | None = None,
             ring_seconds: int = 30) -> str:
        from twilio.base.exceptions import TwilioException

        extra: dict[str, Any] = {}
        if status_callback:
            extra = {"status_callback": status_callback, "status_callback_method": "POST",
                     "status_callback_event": ["completed"]}
        try:
            call = self.client.calls.create(to=to, from_=self.from_number, twiml=twiml,
                                            timeout=ring_seconds, **extra)
        except TwilioException as exc:
            raise SendError(scrub(f"twilio: {exc}")[:300]) from None
        except OSError as exc:
            raise SendError(scrub(f"network: {exc}")[:300]) from None
        return str(call.sid)


class ConsoleBackend:
    """Local mode: the text is printed, never sent. The number is masked even here."""

    name = "console"

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        stream = self.stream or sys.stdout
        print(f"[sms to {mask_phone(to)}] {body}", file=stream, flush=True)
        return "SMconsole" + uuid.uuid4().hex[:24]

    def call(self, to: str, twiml: str, status_callback: str | None = None,
             ring_seconds: int = 30) -> str:
        """Prints what the call would say (the <Say> texts) and which keys it waits for."""
        stream = self.stream or sys.stdout
        root = ET.fromstring(twiml)  # nosec B314 # our own TwiML, not untrusted input
        said = " ".join(dict.fromkeys(" ".join((el.text or "").split())
                                      for el in root.iter("Say")))
        keys = {g.get("numDigits", "") for g in root.iter("Gather")}
        wait = f" [waits for {'/'.join(sorted(keys))} key]" if keys else ""
        print(f"[call to {mask_phone(to)}] {said}{wait}", file=stream, flush=True)
        return "CAconsole" + uuid.uuid4().hex[:24]


def make_backend(config: dict[str, Any]) -> SmsBackend:
    sid = config.get("TWILIO_ACCOUNT_SID") or ""
    sender = config.get("TWILIO_FROM_NUMBER") or ""
    if sid and sender:
        return TwilioBackend(sid, config["TWILIO_AUTH_TOKEN"], sender)
    return ConsoleBackend()


def backend_for(app: Flask) -> SmsBackend:
    """The app's SMS backend, chosen on first use (the worker asks at start-up) and kept."""
    backend = app.extensions.get("sms")
    if backend is None:
        backend = make_backend(app.config)
        app.extensions["sms"] = backend
        log.info("outbound SMS backend: %s", backend.name)
    return backend


def text_patient(r: redis.Redis, backend: SmsBackend | Outbox, phone: str, body: str,
                 now: float, *, record_id: str | None = None) -> str:
    """Send ``body`` to a patient and append it to their transcript ("out"). Raises SendError
    (nothing is appended then: the transcript shows what the patient was sent). With
    ``record_id`` and an ``Outbox``, the text carries a StatusCallback and its delivery is
    tracked on that record."""
    body = to_gsm7(body)
    if record_id and isinstance(backend, Outbox):
        sid = backend.send_tracked(record_id, phone, body, PATIENT, now)
    else:
        sid = backend.send(phone, body)
    append_sent_text(r, phone, body, now)  # the patient's compact transcript (store.py)
    return sid


# --------------------------------------------------------------------------- delivery receipts

ON_CALL, PATIENT = "on_call", "patient"
QUEUED, SENT, DELIVERED, UNDELIVERED, FAILED = (
    "queued", "sent", "delivered", "undelivered", "failed")
NOT_DELIVERED = (UNDELIVERED, FAILED)
# Twilio's MessageStatus values -> what the record shows. "sending" is still on Twilio's side;
# "read" (where the channel reports it) implies delivered; "canceled" was never sent.
_SHOWN = {"accepted": QUEUED, "scheduled": QUEUED, "queued": QUEUED, "sending": QUEUED,
          "sent": SENT, "delivered": DELIVERED, "read": DELIVERED,
          "undelivered": UNDELIVERED, "failed": FAILED, "canceled": FAILED}
_RANK = {QUEUED: 0, SENT: 1, DELIVERED: 2, UNDELIVERED: 2, FAILED: 2}  # final statuses: 2
HISTORY_MAX = 12
_SID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def recipient_id(secret: str, number: str) -> str:
    """A stable id for a phone number that does not expose it (phone numbers are too few for
    a plain hash to hide them; this is keyed by SECRET_KEY)."""
    return hmac.new(secret.encode(), number.encode(), hashlib.sha256).hexdigest()[:12]


def shown_status(twilio_status: str) -> str | None:
    """Twilio's MessageStatus as the record shows it, or None for one that says nothing about
    delivery (receiving, received, partially_delivered, ...)."""
    return _SHOWN.get((twilio_status or "").strip().lower())


def _summary(fields: dict[str, str]) -> list[dict[str, Any]]:
    """Per recipient: the status of the latest message sent to them, and when any message to
    them was first delivered."""
    messages = {k[2:]: json.loads(v) for k, v in fields.items() if k.startswith("m:")}
    out = []
    for key, raw in fields.items():
        if not key.startswith("r:"):
            continue
        rcpt = json.loads(raw)
        current = messages.get(rcpt.get("sid", ""), {})
        delivered = [m["delivered_at"] for m in messages.values()
                     if m.get("rcpt") == key[2:] and m.get("delivered_at")]
        out.append({"recipient": key[2:], "to": rcpt.get("to", ""),
                    "role": rcpt.get("role", ""), "status": current.get("status") or QUEUED,
                    "at": _iso(current.get("at")), "error": current.get("error", ""),
                    "messages": rcpt.get("messages", 1),
                    "delivered_at": _iso(min(delivered)) if delivered else ""})
    out.sort(key=lambda e: (e["role"], e["to"], e["recipient"]))
    return out


class Receipts:
    """Delivery state per record and recipient; see the module docstring."""

    @property
    def k(self) -> keys.Layout:
        """The deployment's key names (one server or a cluster), from the client in use."""
        return keys.of(self.r)

    def __init__(self, r: redis.Redis, base_url: str, secret: str):
        self.r = r
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    def recipient(self, number: str) -> str:
        return recipient_id(self.secret, number)

    def callback_url(self, rid: str, number: str) -> str | None:
        """Twilio must reach this URL; without PUBLIC_BASE_URL there is none to give."""
        if not self.base_url:
            return None
        return f"{self.base_url}/twilio/status/{rid}/{self.recipient(number)}"

    def _change(self, rid: str, fn: Any) -> Any:
        """Read-modify-write the record's delivery hash atomically (WATCH/MULTI): ``fn``
        gets the current fields and returns (updates, result); the summary is rewritten."""

        key = self.k.delivery_key(rid)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    fields = pipe.hgetall(key)
                    updates, result = fn(fields)
                    if updates:
                        merged = {**fields, **updates}
                        pipe.multi()
                        pipe.hset(key, mapping=updates)
                        pipe.hset(self.k.esc_key(rid), "delivery", json.dumps(_summary(merged)))
                        pipe.execute()
                    else:
                        pipe.reset()
                    return result
                except redis.WatchError:
                    continue

    def sent(self, rid: str, number: str, role: str, sid: str, now: float) -> None:
        """Twilio accepted a message (status queued): it becomes the recipient's current one.
        A callback that arrived first (it can) is kept: nothing moves backward."""
        rcpt = self.recipient(number)

        def fn(fields: dict[str, str]) -> tuple[dict[str, str], None]:
            old = json.loads(fields.get(f"r:{rcpt}") or "{}")
            msg = json.loads(fields.get(f"m:{sid}") or "null") or {
                "rcpt": rcpt, "status": QUEUED, "at": now, "error": "",
                "history": [[QUEUED, _iso(now)]]}
            msg.setdefault("sent_at", now)
            entry = {"to": mask_phone(number), "role": role, "sid": sid, "since": now,
                     "messages": int(old.get("messages", 0)) + 1}
            return {f"r:{rcpt}": json.dumps(entry), f"m:{sid}": json.dumps(msg)}, None

        self._change(rid, fn)

    def not_sent(self, rid: str, number: str, role: str, error: str, now: float) -> None:
        """Twilio refused the message (or could not be reached): failed, with the reason."""
        rcpt = self.recipient(number)
        sid = "unsent-" + uuid.uuid4().hex[:12]

        def fn(fields: dict[str, str]) -> tuple[dict[str, str], None]:
            old = json.loads(fields.get(f"r:{rcpt}") or "{}")
            msg = {"rcpt": rcpt, "status": FAILED, "at": now, "error": f"not sent: {error}",
                   "history": [[FAILED, _iso(now)]]}
            entry = {"to": mask_phone(number), "role": role, "sid": sid, "since": now,
                     "messages": int(old.get("messages", 0)) + 1}
            return {f"r:{rcpt}": json.dumps(entry), f"m:{sid}": json.dumps(msg)}, None

        self._change(rid, fn)

    def update(self, rid: str, rcpt: str, sid: str, twilio_status: str, error_code: str,
               now: float) -> dict[str, Any] | None:
        """A status callback. Returns {"status", "changed", "role", "to"} or None when the
        sid belongs to another recipient (a forged or misrouted callback). Statuses only move
        forward; a final one (delivered, undelivered, failed) is never replaced."""
        shown = shown_status(twilio_status)
        if not _SID_RE.match(sid or ""):
            return None

        def fn(fields: dict[str, str]) -> tuple[dict[str, str], dict[str, Any] | None]:
            msg = json.loads(fields.get(f"m:{sid}") or "null")
            if msg is None:  # the callback beat the worker's own note of the send
                msg = {"rcpt": rcpt, "status": "", "at": 0, "error": "", "history": []}
            if msg.get("rcpt") != rcpt:
                return {}, None
            rinfo = json.loads(fields.get(f"r:{rcpt}") or "{}")
            old = msg.get("status") or ""
            changed = shown is not None and (not old or _RANK[shown] > _RANK[old])
            msg["history"] = [*msg.get("history", []), [twilio_status[:20], _iso(now)]][
                -HISTORY_MAX:]
            if changed:
                msg.update(status=shown, at=now)
                if shown == DELIVERED:
                    msg["delivered_at"] = now
                if shown in NOT_DELIVERED:
                    msg["error"] = f"error {error_code}" if error_code else ""
            result = {"status": msg.get("status") or "", "changed": changed,
                      "role": rinfo.get("role", ""), "to": rinfo.get("to", ""),
                      "current": rinfo.get("sid") == sid}
            return {f"m:{sid}": json.dumps(msg)}, result

        return self._change(rid, fn)

    def summary(self, rid: str) -> list[dict[str, Any]]:
        return _summary(self.r.hgetall(self.k.delivery_key(rid)))


def delivery(r: redis.Redis, rid: str) -> list[dict[str, Any]]:
    """Per recipient delivery of a record's texts (what the dashboard and the API show)."""
    return _summary(r.hgetall(keys.of(r).delivery_key(rid)))


def delivery_field(esc: dict[str, str]) -> list[dict[str, Any]]:
    """The ``delivery`` field of an escalation hash (``escalations.details``), parsed: for a
    page that already has the hash, without another Redis round trip."""
    try:
        value = json.loads(esc.get("delivery") or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


class Outbox:
    """The backend plus the receipts: the worker's one way to send and to call."""

    def __init__(self, backend: Any, receipts: Receipts):
        self.backend = backend
        self.receipts = receipts
        self.name = getattr(backend, "name", "?")

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        """Untracked (an ``SmsBackend`` itself)."""
        return self.backend.send(to, body, status_callback)

    def send_tracked(self, rid: str, to: str, body: str, role: str,
                     now: float | None = None,
                     on_sent: Callable[[], object] | None = None) -> str:
        """Send with a StatusCallback for (record, recipient) and note it: queued, or failed
        with the reason (then SendError is raised as usual). ``on_sent`` runs the moment the
        provider has accepted the text, before anything else (the pager records it there:
        the shortest window in which a killed worker could not know it was sent)."""
        now = time.time() if now is None else now
        try:
            sid = self.backend.send(to, body, self.receipts.callback_url(rid, to))
        except SendError as exc:
            self.receipts.not_sent(rid, to, role, str(exc), now)
            raise
        except Exception as exc:
            self.receipts.not_sent(rid, to, role, type(exc).__name__, now)
            raise
        if on_sent is not None:
            on_sent()
        self.receipts.sent(rid, to, role, str(sid), now)
        return str(sid)

    def call(self, to: str, twiml: str, status_callback: str | None, ring_seconds: int) -> str:
        place = getattr(self.backend, "call", None)
        if place is None:
            raise SendError(f"the {self.name} backend cannot place calls")
        return str(place(to, twiml, status_callback, ring_seconds))
