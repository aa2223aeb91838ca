"""Outbound SMS: care-team pages and patient follow-ups.

Two backends, chosen once at start-up by ``backend_for(app)``:

* ``TwilioBackend``: ``twilio.rest.Client(...).messages.create(to=, from_=, body=)``, used when
  TWILIO_ACCOUNT_SID and TWILIO_FROM_NUMBER are both set (the auth token always is);
* ``ConsoleBackend``: prints the text (number masked) instead of sending it, for local use.

A backend either returns a message id or raises ``SendError`` (whose text never holds a whole
phone number, so it can be shown on the dashboard and logged). Tests put their own backend in
``app.extensions["sms"]``.

``text_patient`` is the only way the worker texts a patient: it sends, then appends the text to
the patient's transcript stream, so the dashboard shows every word the patient received.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from typing import Any, Protocol, TextIO

import redis
from flask import Flask

from .sms import to_gsm7
from .store import TRANSCRIPT_MAX, TRANSCRIPT_TTL, mask_phone, transcript_key

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

    def send(self, to: str, body: str) -> str:
        """Send one text; return the provider's message id or raise ``SendError``."""
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

    def send(self, to: str, body: str) -> str:
        from twilio.base.exceptions import TwilioException

        try:
            message = self.client.messages.create(to=to, from_=self.from_number, body=body)
        except TwilioException as exc:
            raise SendError(scrub(f"twilio: {exc}")[:300]) from None
        except OSError as exc:  # network down, DNS, TLS
            raise SendError(scrub(f"network: {exc}")[:300]) from None
        return str(message.sid)


class ConsoleBackend:
    """Local mode: the text is printed, never sent. The number is masked even here."""

    name = "console"

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def send(self, to: str, body: str) -> str:
        stream = self.stream or sys.stdout
        print(f"[sms to {mask_phone(to)}] {body}", file=stream, flush=True)
        return "console-" + uuid.uuid4().hex[:12]


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


def text_patient(r: redis.Redis, backend: SmsBackend, phone: str, body: str,
                 now: float) -> str:
    """Send ``body`` to a patient and append it to their transcript ("out"). Raises SendError
    (nothing is appended then: the transcript shows what the patient was sent)."""
    body = to_gsm7(body)
    sid = backend.send(phone, body)
    key = transcript_key(phone)
    pipe = r.pipeline(transaction=False)
    pipe.xadd(key, {"dir": "out", "text": body, "at": f"{now:.3f}"}, maxlen=TRANSCRIPT_MAX,
              approximate=True)
    pipe.expire(key, TRANSCRIPT_TTL)
    pipe.execute()
    return sid
