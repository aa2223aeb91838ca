"""Follow-ups: a SOON outcome is re-checked by SMS after FOLLOW_UP_AFTER_MINUTES.

clinical-rules.md, "The four tiers": SOON is queued for a same-day call-back and "the service
re-checks with the patient later" (fever: 37.5-37.9 C, re-check in 1 hour; URGENT if then
>= 38.0 or still >= 37.5).

* ``triage:followups``  sorted set  record id -> when the re-check is due
* ``triage:followup:conv:<conversation id>``  string  the record a follow-up conversation
  re-checks (7 days), so the answer's record is linked back to it
* ``triage:esc:<id>``  hash  follow_up_status (scheduled | sent | retrying | failed | skipped),
  follow_up_due, follow_up_attempts, follow_up_sent_at, follow_up_conversation,
  follow_up_error, follow_up_answer (record id of the re-triaged answer)

When due, in one atomic session transaction (``Store.process`` with a pure step):
if the patient opted out (STOP) or started a newer conversation, it is skipped with an event;
otherwise ``Engine.start_follow_up`` puts the session on the checklist's follow-up question and
the question is sent (and added to the transcript). The reply then goes through the normal
signed webhook and is triaged with the earlier findings remembered. A follow-up is never
scheduled for a record that is itself the answer to a follow-up (no endless hourly re-checks).
"""

from __future__ import annotations

import logging
from typing import Any

from . import keys
from .clock import iso_utc as iso
from .conversation.engine import Result
from .escalations import add_event

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import FOLLOWUPS, link_key  # noqa: F401
from .notify import SendError, SmsBackend, text_patient
from .paging import LEASE_SECONDS, WORKER, backoff, claim_due, due_members, record_time
from .service import TriageService
from .store import mask_phone

log = logging.getLogger(__name__)

LINK_TTL = 7 * 24 * 3600
NOT_TEXTED_STATUSES = ("paused", "discharged")  # profile status: no unsolicited texts


def wants_follow_up(rec: dict[str, Any]) -> bool:
    return rec.get("tier") == "SOON" and rec.get("kind") == "completed"


def origin_of(r: Any, conversation_id: str | None) -> str | None:
    """The record a follow-up conversation re-checks, if this conversation is one."""
    return r.get(keys.of(r).link_key(conversation_id)) if conversation_id else None


class FollowUps:
    def __init__(self, service: TriageService, backend: SmsBackend, *, after_seconds: float,
                 max_attempts: int, retry_base: float):
        self.service = service
        self.store = service.store
        self.r = service.store.r
        self.backend = backend
        self.after = after_seconds
        self.max_attempts = max_attempts
        self.retry_base = retry_base

    # -- scheduling (from the record consumer)
    def schedule(self, rid: str, rec: dict[str, Any], now: float) -> bool:
        if not wants_follow_up(rec) or origin_of(self.r, rec.get("conversation_id")):
            return False
        due = record_time(rid, rec) + self.after
        if not self.r.zadd(self.k.FOLLOWUPS, {rid: due}, nx=True):
            return False  # already scheduled (a record routed twice)
        self.r.hset(self.k.esc_key(rid), mapping={"follow_up_status": "scheduled",
                                           "follow_up_due": due, "follow_up_attempts": 0})
        add_event(self.r, rid, "follow_up_scheduled", WORKER,
                  f"re-check by SMS due {iso(due)}", now)
        return True

    @property
    def k(self) -> keys.Layout:
        """The deployment's key names (one server or a cluster), from the client in use."""
        return keys.of(self.r)

    def note_answer(self, rid: str, rec: dict[str, Any], now: float) -> str | None:
        """A record from a follow-up conversation: note it on the record it re-checks.
        Returns that record's id."""
        origin = origin_of(self.r, rec.get("conversation_id"))
        if not origin or origin == rid:
            return None
        if rec.get("kind") == "abandoned":
            add_event(self.r, origin, "follow_up_unanswered", WORKER,
                      f"no complete reply to the re-check (record {rid})", now)
        else:
            self.r.hset(self.k.esc_key(origin), "follow_up_answer", rid)
            add_event(self.r, origin, "follow_up_answered", WORKER,
                      f"re-check triaged {rec.get('tier')} (record {rid})", now)
        return origin

    # -- sending (every tick)
    def send_due(self, now: float) -> int:
        sent = 0
        for rid in due_members(self.r, self.k.FOLLOWUPS, now):
            if not claim_due(self.r, self.k.FOLLOWUPS, rid, now, now + LEASE_SECONDS):
                continue
            try:
                if self.send_one(rid, now):
                    sent += 1
            except Exception:
                log.exception("follow-up %s failed unexpectedly; retried after the lease", rid)
        return sent

    def _skip(self, rid: str, why: str, now: float) -> None:
        self.r.zrem(self.k.FOLLOWUPS, rid)
        self.r.hset(self.k.esc_key(rid), mapping={"follow_up_status": "skipped",
                                           "follow_up_error": why})
        add_event(self.r, rid, "follow_up_skipped", WORKER, why, now)

    def send_one(self, rid: str, now: float) -> bool:
        rec = self.store.record(rid)
        if rec is None:
            self.r.zrem(self.k.FOLLOWUPS, rid)
            return False
        phone = rec.get("phone") or ""
        profile_status = self.store.profile(phone).get("status", "")
        if profile_status in NOT_TEXTED_STATUSES:
            self._skip(rid, f"patient is {profile_status} in the registry: not texted", now)
            return False
        engine = self.service.engine
        outcome: dict[str, str | None] = {}

        def step(session: dict[str, Any] | None) -> Result:
            # Pure: a skipped follow-up gives back the session unchanged.
            text, note, result = engine.follow_up(session, rec.get("flow") or "", now=now,
                                                  after_conversation=rec.get(
                                                      "conversation_id") or "")
            outcome.update(text=text, note=note)
            return result

        self.store.process(phone, None, None, step, now=now)
        text, note = outcome.get("text"), outcome.get("note") or ""
        if text is None:
            self._skip(rid, note, now)
            log.info("follow-up for %s skipped (%s) phone=%s", rid, note, mask_phone(phone))
            return False
        self.r.set(self.k.link_key(note), rid, ex=LINK_TTL)
        key = self.k.esc_key(rid)
        attempts = int(self.r.hget(key, "follow_up_attempts") or 0) + 1
        try:
            text_patient(self.r, self.backend, phone, text, now, record_id=rid)
        except SendError as exc:
            error = str(exc)[:300]
            if attempts < self.max_attempts:
                wait = backoff(self.retry_base, attempts)
                self.r.zadd(self.k.FOLLOWUPS, {rid: now + wait})
                self.r.hset(key, mapping={"follow_up_status": "retrying",
                                          "follow_up_attempts": attempts,
                                          "follow_up_error": error})
                add_event(self.r, rid, "follow_up_failed", WORKER,
                          f"attempt {attempts} failed: {error}; retry in {wait:.0f} s", now)
            else:
                self.r.zrem(self.k.FOLLOWUPS, rid)
                self.r.hset(key, mapping={"follow_up_status": "failed",
                                          "follow_up_attempts": attempts,
                                          "follow_up_error": error})
                add_event(self.r, rid, "follow_up_failed", WORKER,
                          f"gave up after {attempts} attempts: {error}", now)
                log.error("follow-up for %s FAILED after %s attempts", rid, attempts)
            return False
        self.r.zrem(self.k.FOLLOWUPS, rid)
        self.r.hset(key, mapping={"follow_up_status": "sent", "follow_up_attempts": attempts,
                                  "follow_up_sent_at": now, "follow_up_conversation": note,
                                  "follow_up_error": ""})
        add_event(self.r, rid, "follow_up_sent", WORKER, f"re-check sent: {text}", now)
        log.info("follow-up sent for %s phone=%s", rid, mask_phone(phone))
        return True
