"""Voice escalation: an EMERGENCY page nobody has seen becomes a phone call, then the next call.

The ladder, for every EMERGENCY record that pages (run by the worker, ``bot/worker.py``):

1. its page is sent to every ON_CALL_NUMBERS number, with a delivery receipt (``notify.py``);
2. VOICE_IF_UNDELIVERED_MINUTES (2) after the record, if Twilio has not reported the page
   delivered to any on-call number (or sooner, once every on-call number's page is reported
   failed or undelivered), or VOICE_IF_UNACKNOWLEDGED_MINUTES (5) after the record if nobody
   has acknowledged it, the worker calls the first number of the rota (ON_CALL_ROTA, else
   ON_CALL_NUMBERS in order). The call reads the tier, the checklist and the escalation id and
   says "press 1 to acknowledge" (TwiML ``<Gather numDigits="1">``, posting to the signed
   ``/twilio/voice/<id>/<step>/gather``);
3. 1 pressed: the escalation is acknowledged, by ``voice +1********11`` (masked), in its
   events and in the audit log; the ladder stops;
4. no answer, busy, failed, answered without a key, another key, or no result within
   VOICE_STEP_TIMEOUT_SECONDS: the next number of the rota is called (cycling), up to
   VOICE_MAX_CALLS calls; then ``voice_status=exhausted`` (the SMS re-pages of the
   acknowledgement deadline go on). Acknowledged or resolved on the dashboard: no more calls.
5. Two escalations never ring the same phone at once: a phone on another escalation's call is
   skipped for the next one of the rota; when every rota phone is busy the call waits (looked
   at again every 30 s, without using up a step), and the escalation that has waited longest
   gets the next free phone.

Every step is recorded. Kept in Redis:

``triage:voice:due``          sorted set  record id -> when the ladder is next looked at
``triage:voice:waiting``      sorted set  record id -> since when it waits for a free phone
``triage:voice:line:<rcpt>``  string      "<record id>/<step>" while that call holds the phone
                                          (expires after VOICE_STEP_TIMEOUT + ring time)
``triage:esc:<id>``           hash        voice_status (watching | calling | acknowledged |
                                          stopped | exhausted | not_needed | not_possible),
                                          voice_step, voice_reason, voice_next_at
``triage:esc:<id>:voice``     hash        ``<n>`` -> step n {n, to (masked), rota_index,
                                          state (placing | placed | not_placed), at, sid,
                                          reason, error}; ``<n>:outcome`` -> {outcome, detail,
                                          at}

A step is claimed (HSETNX ``<n>``) before its call is placed, so a worker killed and restarted
never places the same step twice: a step claimed but never reported is closed by its timeout
and the ladder moves on to the next number. Callbacks only record outcomes and make the ladder
due now; only the worker places calls.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import redis
from twilio.twiml.voice_response import Gather, VoiceResponse

from . import audit, keys
from .escalations import OPEN, TransitionError, acknowledge, add_event, esc_key, status  # noqa: F401

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import VOICE_DUE, VOICE_WAITING, line_key, voice_key  # noqa: F401
from .notify import NOT_DELIVERED, ON_CALL, Outbox, Receipts, SendError
from .paging import BATCH, LEASE_SECONDS, WORKER, claim_due, due_members, page_kind, record_time
from .store import Store, mask_phone

log = logging.getLogger(__name__)

VOICE_TIERS = ("EMERGENCY",)
WATCHING, CALLING, ACKNOWLEDGED, STOPPED, EXHAUSTED, NOT_NEEDED, NOT_POSSIBLE = (
    "watching", "calling", "acknowledged", "stopped", "exhausted", "not_needed", "not_possible")
# Twilio's final CallStatus values -> the step's outcome (any other status is not final).
CALL_OUTCOMES = {"completed": ("no_key", "answered, 1 not pressed"),
                 "no-answer": ("no_answer", "no answer"),
                 "busy": ("busy", "line busy"),
                 "failed": ("failed", "call failed"),
                 "canceled": ("canceled", "call canceled")}
GATHER_SECONDS = 8
LINE_WAIT_SECONDS = 30.0  # every rota phone is on another escalation call: look again then
# Release a phone line only if this step still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RID_RE = re.compile(r"^\d{1,20}-\d{1,10}$")


@dataclass(frozen=True)
class VoiceSettings:
    rota: tuple[str, ...]
    base_url: str
    undelivered_after: float
    unacknowledged_after: float
    max_calls: int
    ring_seconds: int
    step_timeout: float
    retry_after: float

    @classmethod
    def from_config(cls, config: Any) -> VoiceSettings:
        raw = config.get("ON_CALL_ROTA") or config.get("ON_CALL_NUMBERS") or ""
        rota = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
        return cls(rota=rota,
                   base_url=(config.get("PUBLIC_BASE_URL") or "").rstrip("/"),
                   undelivered_after=float(config.get("VOICE_IF_UNDELIVERED_MINUTES", 2)) * 60,
                   unacknowledged_after=float(
                       config.get("VOICE_IF_UNACKNOWLEDGED_MINUTES", 5)) * 60,
                   max_calls=max(1, int(config.get("VOICE_MAX_CALLS", 6))),
                   ring_seconds=max(5, int(config.get("VOICE_RING_SECONDS", 30))),
                   step_timeout=max(30.0, float(config.get("VOICE_STEP_TIMEOUT_SECONDS", 180))),
                   retry_after=max(1.0, float(config.get("PAGE_RETRY_SECONDS", 30))))


# --------------------------------------------------------------------------- what is said

def spell(rid: str) -> str:
    """An escalation id read out one character at a time: '17-0' -> '1 7 dash 0'."""
    return " ".join("dash" if ch == "-" else ch for ch in rid)


def call_twiml(rid: str, rec: dict[str, Any], gather_url: str | None) -> str:
    """What the on-call person hears: the tier, the checklist, the escalation id, and "press 1
    to acknowledge" (asked twice). Never the patient's number or words."""
    tier = str(rec.get("tier") or "unknown").capitalize()
    flow = (rec.get("flow") or "red flag").replace("_", " ")
    text = (f"This is the symptom triage service. {tier} escalation, {flow}. "
            f"Escalation number {spell(rid)}.")
    resp = VoiceResponse()
    if gather_url is None:  # no PUBLIC_BASE_URL: Twilio could not post the key press anywhere
        resp.say(f"{text} Open the dashboard to acknowledge it.")
        return str(resp)
    ask = f"{text} Press 1 to acknowledge that you are handling it. Press any other key if " \
          "you cannot."
    for _ in range(2):
        gather = Gather(num_digits=1, action=gather_url, method="POST", timeout=GATHER_SECONDS)
        gather.say(ask)
        resp.append(gather)
    resp.say("No key was pressed. The next person on the rota will be called. Goodbye.")
    resp.hangup()
    return str(resp)


# --------------------------------------------------------------------------- step outcomes

def step_info(r: redis.Redis, rid: str, n: int) -> dict[str, Any] | None:
    raw = r.hget(keys.of(r).voice_key(rid), str(n))
    return json.loads(raw) if raw else None


def set_outcome(r: redis.Redis, rid: str, n: int, outcome: str, detail: str,
                now: float) -> bool:
    """The first outcome of step n wins (a key press beats the hang-up that follows it, a
    timeout beats a callback that comes too late). Makes the ladder due now."""
    if not r.hsetnx(keys.of(r).voice_key(rid), f"{n}:outcome",
                    json.dumps({"outcome": outcome, "detail": detail, "at": now})):
        return False
    step = step_info(r, rid, n) or {}
    if step.get("line"):
        r.eval(_RELEASE, 1, step["line"], f"{rid}/{n}")
    add_event(r, rid, "voice_result", WORKER,
              f"call {n} to {step.get('to', '?')}: {detail}", now)
    r.zadd(keys.of(r).VOICE_DUE, {rid: now}, xx=True)
    return True


def call_status(r: redis.Redis, rid: str, n: int, twilio_status: str, now: float) -> bool:
    """Twilio's status callback for the call of step n. Returns False for an unknown step."""
    if step_info(r, rid, n) is None:
        return False
    final = CALL_OUTCOMES.get((twilio_status or "").strip().lower())
    if final:
        set_outcome(r, rid, n, final[0], final[1], now)
    return True


def gather(r: redis.Redis, rid: str, n: int, digits: str, now: float) -> str | None:
    """The key pressed during the call of step n; the TwiML to answer with (None: unknown
    step). 1 acknowledges the escalation, audited as by voice from the masked number."""
    step = step_info(r, rid, n)
    if step is None:
        return None
    digit = (digits or "").strip()[:1]
    who = f"voice {step.get('to', '?')}"
    resp = VoiceResponse()
    if digit == "1":
        try:
            acknowledge(r, rid, who, now)
        except TransitionError:
            current = status(r, rid)
            by = r.hget(keys.of(r).esc_key(rid),
                        f"{'resolved' if current == 'resolved' else 'acknowledged'}_by"
                        ) or "someone"
            set_outcome(r, rid, n, "pressed_1", f"pressed 1: already {current} by {by}", now)
            resp.say(f"This escalation was already {current} by {by}. Thank you. Goodbye.")
        else:
            r.hset(keys.of(r).esc_key(rid), "voice_status", ACKNOWLEDGED)
            audit.log(r, who, "ack", rid, f"acknowledged by voice: pressed 1 on call {n}", now)
            set_outcome(r, rid, n, "acknowledged", "pressed 1: acknowledged", now)
            log.info("escalation %s acknowledged by voice (call %s)", rid, n)
            resp.say("Acknowledged. Thank you. The escalation is on the dashboard, number "
                     f"{spell(rid)}. Goodbye.")
    else:
        shown = digit if digit and (digit.isdigit() or digit in "*#") else "nothing"
        set_outcome(r, rid, n, "declined", f"pressed {shown}: not acknowledged", now)
        resp.say("Not acknowledged. The next person on the rota will be called. Goodbye.")
    resp.hangup()
    return str(resp)


def summary(r: redis.Redis, rid: str) -> dict[str, Any]:
    """The ladder as the dashboard and the API show it."""
    d = r.hmget(keys.of(r).esc_key(rid), "voice_status", "voice_step", "voice_reason",
                "voice_next_at")
    fields = r.hgetall(keys.of(r).voice_key(rid))
    calls = []
    for key in sorted((k for k in fields if k.isdigit()), key=int):
        step = json.loads(fields[key])
        outcome = json.loads(fields.get(f"{key}:outcome") or "{}")
        calls.append({"step": step.get("n"), "to": step.get("to", ""),
                      "rota_index": step.get("rota_index"), "state": step.get("state", ""),
                      "at": step.get("at"), "reason": step.get("reason", ""),
                      "error": step.get("error", ""), "outcome": outcome.get("outcome", ""),
                      "detail": outcome.get("detail", ""), "outcome_at": outcome.get("at")})
    return {"status": d[0] or "", "step": int(d[1] or 0), "reason": d[2] or "",
            "next_at": float(d[3]) if d[3] else None, "calls": calls}


# --------------------------------------------------------------------------- the ladder

class VoiceLadder:
    def __init__(self, store: Store, outbox: Outbox, settings: VoiceSettings):
        self.store = store
        self.r = store.r
        self.outbox = outbox
        self.s = settings

    @property
    def receipts(self) -> Receipts:
        return self.outbox.receipts

    @property
    def k(self) -> keys.Layout:
        """The deployment's key names (one server or a cluster), from the client in use."""
        return keys.of(self.r)

    def on_record(self, rid: str, rec: dict[str, Any], now: float) -> bool:
        """A new record: watch an EMERGENCY that pages (once: a record routed twice is
        watched once)."""
        if rec.get("tier") not in VOICE_TIERS or page_kind(rec) is None:
            return False
        key = self.k.esc_key(rid)
        if self.r.hexists(key, "voice_status"):
            return False
        if not self.s.rota:
            if self.r.hsetnx(key, "voice_status", NOT_POSSIBLE):
                add_event(self.r, rid, "voice_not_possible", WORKER,
                          "no ON_CALL_ROTA or ON_CALL_NUMBERS: no escalation call can be made",
                          now)
                log.warning("escalation %s: no rota, no escalation call possible", rid)
            return False
        due = record_time(rid, rec) + self.s.undelivered_after
        self.r.zadd(self.k.VOICE_DUE, {rid: due}, nx=True)
        self.r.hsetnx(key, "voice_status", WATCHING)
        self.r.hsetnx(key, "voice_next_at", due)
        return True

    def run_due(self, now: float, rounds: int = 50) -> int:
        """Look at every ladder that is due (batch after batch: a burst of EMERGENCY records
        is called in one tick); returns the number of calls placed."""
        placed = 0
        for _ in range(rounds):
            batch = due_members(self.r, self.k.VOICE_DUE, now, BATCH)
            for rid in batch:
                if not claim_due(self.r, self.k.VOICE_DUE, rid, now, now + LEASE_SECONDS):
                    continue  # another worker has it
                try:
                    if self.check(rid, now):
                        placed += 1
                except Exception:
                    log.exception("voice escalation %s failed unexpectedly; retried after "
                                  "the lease", rid)
            if len(batch) < BATCH:
                break
        return placed

    def _schedule(self, rid: str, at: float) -> None:
        self.r.zadd(self.k.VOICE_DUE, {rid: at})
        self.r.hset(self.k.esc_key(rid), "voice_next_at", at)

    def _stop(self, rid: str, new_status: str) -> None:
        self.r.zrem(self.k.VOICE_DUE, rid)
        self.r.zrem(self.k.VOICE_WAITING, rid)
        self.r.hset(self.k.esc_key(rid), mapping={"voice_status": new_status, "voice_next_at": ""})

    def check(self, rid: str, now: float) -> bool:
        rec = self.store.record(rid)
        if rec is None:
            self.r.zrem(self.k.VOICE_DUE, rid)
            return False
        d = self.r.hgetall(self.k.esc_key(rid))
        # raised in place (URGENT, then EMERGENCY): the call says the escalation's tier now
        rec = {**rec, "tier": d.get("escalation_tier") or rec.get("tier")}
        ladder = d.get("voice_status") or WATCHING
        current = status(self.r, rid)
        if current != OPEN:
            if ladder == CALLING:
                by = d.get("resolved_by" if current == "resolved" else "acknowledged_by") or "?"
                self._stop(rid, STOPPED)
                add_event(self.r, rid, "voice_stopped", WORKER,
                          f"escalation {current} by {by}: no further calls", now)
            elif ladder == WATCHING:
                self._stop(rid, NOT_NEEDED)
            else:
                self.r.zrem(self.k.VOICE_DUE, rid)
                self.r.zrem(self.k.VOICE_WAITING, rid)
            return False
        if ladder in (EXHAUSTED, STOPPED, NOT_POSSIBLE, ACKNOWLEDGED, NOT_NEEDED):
            self.r.zrem(self.k.VOICE_DUE, rid)
            self.r.zrem(self.k.VOICE_WAITING, rid)
            return False
        step = int(d.get("voice_step") or 0)
        if step == 0:
            reason = self._first_reason(rid, rec, now)
            if reason is None:
                return False
            self.r.hset(self.k.esc_key(rid), "voice_reason", reason)
            return self._place(rid, rec, 1, reason, now)
        if self.r.hget(self.k.voice_key(rid), f"{step}:outcome") is None:
            info = step_info(self.r, rid, step) or {}
            deadline = float(info.get("at") or now) + self.s.step_timeout
            if now < deadline:
                self._schedule(rid, deadline)
                return False
            why = ("no result from the call" if info.get("state") == "placed" else
                   "the call was not confirmed as placed (worker stopped?)")
            set_outcome(self.r, rid, step, "timeout",
                        f"{why} within {self.s.step_timeout:.0f} s", now)
        if step >= self.s.max_calls:
            self._stop(rid, EXHAUSTED)
            add_event(self.r, rid, "voice_exhausted", WORKER,
                      f"nobody acknowledged after {step} call(s) (VOICE_MAX_CALLS); SMS "
                      "re-pages continue at the acknowledgement deadline", now)
            log.error("voice escalation %s exhausted after %s calls", rid, step)
            return False
        return self._place(rid, rec, step + 1, f"call {step} not acknowledged", now)

    def _first_reason(self, rid: str, rec: dict[str, Any], now: float) -> str | None:
        """Why the ladder starts now, or None (then it is scheduled for the next check)."""
        t0 = record_time(rid, rec)
        if now >= t0 + self.s.unacknowledged_after:
            return f"not acknowledged within {self.s.unacknowledged_after / 60:g} min"
        on_call = [e for e in self.receipts.summary(rid) if e["role"] == ON_CALL]
        if any(e["delivered_at"] for e in on_call):
            self._schedule(rid, t0 + self.s.unacknowledged_after)
            return None
        if now >= t0 + self.s.undelivered_after:
            return f"page not delivered within {self.s.undelivered_after / 60:g} min"
        if on_call and all(e["status"] in NOT_DELIVERED for e in on_call):
            return "page failed or undelivered to every on-call number"
        self._schedule(rid, t0 + self.s.undelivered_after)
        return None

    def _urls(self, rid: str, n: int) -> tuple[str | None, str | None]:
        if not self.s.base_url:
            return None, None
        base = f"{self.s.base_url}/twilio/voice/{rid}/{n}"
        return f"{base}/status", f"{base}/gather"

    def _claimed(self, rid: str, n: int, now: float) -> bool:
        """Step n was claimed already, by a worker that stopped before recording more: never
        call twice; wait for the step's outcome or its timeout."""
        claimed = step_info(self.r, rid, n)
        if claimed is None:
            return False
        self.r.hset(self.k.esc_key(rid), mapping={"voice_step": n, "voice_status": CALLING})
        self._schedule(rid, float(claimed.get("at") or now) + self.s.step_timeout)
        return True

    def _older_waiter(self, rid: str) -> str | None:
        """An open escalation that has waited longer than this one for a free phone: it goes
        first (one unanswered escalation must not keep the only phone from another)."""
        mine = self.r.zscore(self.k.VOICE_WAITING, rid)
        for other, _since in self.r.zrangebyscore(self.k.VOICE_WAITING, "-inf",
                                                  "+inf" if mine is None else f"({mine}",
                                                  withscores=True):
            if other == rid:
                continue
            if status(self.r, other) != OPEN:
                self.r.zrem(self.k.VOICE_WAITING, other)
                continue
            return other
        return None

    def _free_line(self, rid: str, n: int) -> tuple[int, str, list[str]] | None:
        """The rota index (0-based) and line key of the phone step n calls: the one after the
        previous step's, skipping phones that are on another escalation's call right now."""
        rota = self.s.rota
        before = step_info(self.r, rid, n - 1) if n > 1 else None
        start = int(before.get("rota_index") or 0) % len(rota) if before else 0
        token = f"{rid}/{n}"
        hold = int(self.s.step_timeout + self.s.ring_seconds)
        busy: list[str] = []
        for k in range(len(rota)):
            index = (start + k) % len(rota)
            line = self.k.line_key(self.receipts.recipient(rota[index]))
            if self.r.set(line, token, nx=True, ex=hold) or self.r.get(line) == token:
                return index, line, busy
            busy.append(mask_phone(rota[index]))
        return None

    def _place(self, rid: str, rec: dict[str, Any], n: int, reason: str, now: float) -> bool:
        key, vkey = self.k.esc_key(rid), self.k.voice_key(rid)
        if self._claimed(rid, n, now):
            return False
        free = self._free_line(rid, n)
        waiter = self._older_waiter(rid) if free else None
        if free and waiter:  # the free phone is the longest-waiting escalation's
            self.r.eval(_RELEASE, 1, free[1], f"{rid}/{n}")
            self.r.zadd(self.k.VOICE_DUE, {waiter: now}, xx=True)
            free = None
        if free is None:
            self.r.zadd(self.k.VOICE_WAITING, {rid: now}, nx=True)
            log.info("escalation %s: call %s waits %.0f s for a free rota phone%s", rid, n,
                     LINE_WAIT_SECONDS, f" (after {waiter})" if waiter else "")
            self._schedule(rid, now + LINE_WAIT_SECONDS)
            return False
        self.r.zrem(self.k.VOICE_WAITING, rid)
        index, line, busy = free
        number = self.s.rota[index]
        step: dict[str, Any] = {"n": n, "to": mask_phone(number), "rota_index": index + 1,
                                "state": "placing", "at": now, "reason": reason, "line": line}
        if not self.r.hsetnx(vkey, str(n), json.dumps(step)):
            self.r.eval(_RELEASE, 1, line, f"{rid}/{n}")
            self._claimed(rid, n, now)
            return False
        self.r.hset(key, mapping={"voice_step": n, "voice_status": CALLING})
        status_url, gather_url = self._urls(rid, n)
        twiml = call_twiml(rid, rec, gather_url)
        try:
            sid = self.outbox.call(number, twiml, status_url, self.s.ring_seconds)
        except SendError as exc:
            step.update(state="not_placed", error=str(exc)[:300])
            self.r.hset(vkey, str(n), json.dumps(step))
            add_event(self.r, rid, "voice_call_failed", WORKER,
                      f"call {n} to {step['to']} could not be placed: {exc}", now)
            set_outcome(self.r, rid, n, "not_placed", f"not placed: {exc}", now)
            self._schedule(rid, now + self.s.retry_after)
            log.warning("escalation call %s for %s not placed", n, rid)
            return False
        step.update(state="placed", sid=sid)
        self.r.hset(vkey, str(n), json.dumps(step))
        skipped = f"; {', '.join(busy)} on another escalation call" if busy else ""
        add_event(self.r, rid, "voice_call", WORKER,
                  f"call {n} of at most {self.s.max_calls} to {step['to']} (rota number "
                  f"{index + 1}{skipped}): {reason}", now)
        self._schedule(rid, now + self.s.step_timeout)
        log.warning("escalation %s: voice call %s placed (%s)", rid, n, reason)
        return True
