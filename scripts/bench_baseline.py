"""The benchmark's floor (scripts/bench.py): the least a Twilio webhook can do. It validates the
Twilio signature (the real RequestValidator), does one pipelined HGETALL + HSET + EXPIRE on the
sender's hash, and returns TwiML. Served by gunicorn under the project's gunicorn.conf.py,
exactly like the service. Not shipped; never used outside the benchmark."""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

app = Flask(__name__)
validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
r = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
SIGNED_URL = os.environ["PUBLIC_BASE_URL"].rstrip("/") + "/sms"
TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>{}</Message></Response>')


@app.post("/sms")
def sms() -> Response:
    if not validator.validate(SIGNED_URL, request.form,
                              request.headers.get("X-Twilio-Signature", "")):
        return Response("forbidden", status=403)
    key = f"bench:{{{request.form.get('From', '')}}}"
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.hset(key, mapping={"last": request.form.get("Body", ""),
                            "sid": request.form.get("MessageSid", "")})
    pipe.expire(key, 86400)
    state, _, _ = pipe.execute()
    reply = "Thanks, noted." if state else "Hello."
    return Response(TWIML.format(reply), mimetype="text/xml")


@app.get("/healthz")
def healthz() -> Response:
    return Response('{"status":"ok"}', mimetype="application/json")
