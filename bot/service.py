"""The triage service: engine + store + patient context, used by the webhook, the chat tool and
the worker. Holds no per-patient state of its own (web workers are stateless)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from .breaker import Breaker, StoreUnavailable
from .clock import iso_utc
from .conversation.engine import Engine, Result
from .conversation.flows import Library
from .sms import to_gsm7
from .spool import Spool
from .store import OPTED_OUT_STATE, RateLimit, Saved, Snapshot, Store, mask_phone

log = logging.getLogger(__name__)

# A message's Redis work is abandoned (fallback reply, spooled) once it has taken this long:
# with 0.5 s socket timeouts the reply still leaves well inside 3 s.
MESSAGE_BUDGET_SECONDS = 1.5

# Over the per-number rate limit: at most this reply once per window, then empty TwiML.
THROTTLED_REPLY = ("We have your messages. If this is an emergency call 911. Otherwise please "
                   "call the care team at {care_team}.")
# Twilio's opt-out / opt-in keywords: never throttled (STOP must always work).
CARRIER_KEYWORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit",
                              "start", "unstop"})


class TriageService:
    def __init__(self, store: Store, library: Library, engine: Engine, *,
                 abandon_after_seconds: int, spool: Spool | None = None,
                 breaker: Breaker | None = None, rate_limit: RateLimit | None = None,
                 care_team: str = ""):
        self.store = store
        self.rate_limit = rate_limit if rate_limit and rate_limit.texts > 0 else None
        self.care_team = care_team
        self._red_flag_ids = frozenset(rf.id for rf in library.red_flags)
        self.library = library
        self.engine = engine
        self.abandon_after = abandon_after_seconds
        self.spool = spool
        if spool is not None:
            spool.retry_on = (StoreUnavailable, redis.RedisError, OSError)
        self.breaker = breaker or Breaker()
        self._replaying = threading.Lock()

    def context(self, phone: str, now: float) -> dict[str, Any]:
        return self._context_from(self.store.profile(phone), now)

    def _context_from(self, profile: dict[str, str], now: float) -> dict[str, Any]:
        return self.engine.patient_context(profile, now)

    def handle_sms(self, phone: str, sid: str | None, body: str, num_media: int = 0,
                   now: float | None = None, *, during_outage: bool = False) -> Saved:
        """One inbound text through the engine and the store. Redis down, stalled or known to
        be (the breaker): ``StoreUnavailable`` at once, or within one socket timeout."""
        if not self.breaker.allow():
            raise StoreUnavailable("Redis is known to be down (circuit open)")
        try:
            saved = self._handle_sms(phone, sid, body, num_media, now, during_outage)
        except (redis.RedisError, OSError) as exc:
            self.breaker.failure()
            raise StoreUnavailable(type(exc).__name__) from exc
        self.breaker.success()
        return saved

    def _handle_sms(self, phone: str, sid: str | None, body: str, num_media: int,
                    now: float | None, during_outage: bool) -> Saved:
        """Two Redis round trips in the common case: ``store.read`` (session, version,
        profile, this MessageSid's cached reply, the rate limit's count) and ``store.commit``
        (everything the message writes, refused if another message of this patient committed
        in between: then read and step again)."""
        started = time.monotonic()
        now = time.time() if now is None else now
        inbound = body[:2000]
        for attempt in range(200):
            if time.monotonic() - started > MESSAGE_BUDGET_SECONDS:
                raise redis.TimeoutError("message budget spent: Redis too slow")
            snap = self.store.read(phone, sid, now, self.rate_limit)
            if snap.cached is not None:
                return snap.cached
            # texts replayed from the outage spool each get their engine turn (they were
            # received, and answered with the fallback, while nothing could be counted)
            if not during_outage and self._throttle(snap, body):
                saved = self.store.commit(phone, sid, snap, self._throttled(snap), inbound, now,
                                          limit=self.rate_limit, throttled=True)
                if saved is not None:
                    # once a window at WARNING (when the notice goes out), then quietly
                    log.log(logging.WARNING if saved.reply else logging.DEBUG,
                            "rate limit: %s texts from %s in %s s, no engine turn",
                            snap.texts_in_window + 1, mask_phone(phone),
                            self.rate_limit.window_seconds if self.rate_limit else 0)
                    return saved
                continue
            context = self._context_from(snap.profile, now)
            result = self.engine.handle(snap.session, body, num_media=num_media, now=now,
                                        phone=phone, profile=context)
            for rec in result.records:
                rec["unregistered"] = not context["registered"]
                rec["risk_windows"] = context["risk_windows"]
                if during_outage:
                    rec["received_during_outage"] = True
                    rec["received_at"] = iso_utc(now)
            saved = self.store.commit(phone, sid, snap, result, inbound, now,
                                      limit=self.rate_limit)
            if saved is not None:
                for rec in saved.records:
                    log.info("triage record tier=%s flow=%s kind=%s phone=%s", rec["tier"],
                             rec["flow"], rec["kind"], mask_phone(phone))
                return saved
            time.sleep(min(0.002 * (attempt + 1), 0.05))  # another message won: again
        raise RuntimeError("too much contention on one patient's session")

    # -- the per-number rate limit (issue 8 item 4)
    def _throttle(self, snap: Snapshot, body: str) -> bool:
        """Over the limit and nothing in the text that must reach the engine: no engine turn.
        Always honoured: a red flag the reader finds (current: not negated, past or
        hypothetical), an answer to a pending checklist question (it may be the one that
        says EMERGENCY; a checklist ends after a bounded number of texts), and Twilio's
        opt-out/opt-in keywords."""
        limit = self.rate_limit
        if limit is None or snap.texts_in_window < limit.texts:
            return False
        if self.engine.pending(snap.session) is not None:
            return False
        if " ".join(body.lower().split()).strip(" .!") in CARRIER_KEYWORDS:
            return False  # the whole text is the keyword, as carriers match it
        reading = self.engine.read(body)
        return not any(f.concept in self._red_flag_ids for f in reading.current("red_flag"))

    def _throttled(self, snap: Snapshot) -> Result:
        """The one short reply a window gets (none to an opted-out number)."""
        session = snap.session or {}
        silent = snap.throttle_replied or snap.opted_out or \
            session.get("state") == OPTED_OUT_STATE
        reply = None if silent else to_gsm7(self.engine.fill(
            self.engine.msg.get("rate_limited") or THROTTLED_REPLY))
        return Result(reply, session, [], in_checklist=False)

    # -- the outage spool
    def spool_inbound(self, phone: str, sid: str | None, body: str, num_media: int,
                      now: float | None = None) -> bool:
        """Keep a text Redis could not take, durably, for ``replay_spool``. False if even the
        disk refused (logged: the patient was still answered)."""
        if self.spool is None:
            return False
        try:
            self.spool.append(phone, sid, body[:2000], num_media,
                              time.time() if now is None else now)
            return True
        except OSError:
            log.exception("could not spool a text from %s", mask_phone(phone))
            return False

    def replay_spool(self) -> int:
        """Texts received during an outage, through the normal path (records, pages), once.
        Raises ``StoreUnavailable`` if Redis fails again (the rest stays spooled)."""
        if self.spool is None or not self.spool.pending():
            return 0
        return self.spool.replay(lambda e: self.handle_sms(
            e["phone"], e["sid"], e["body"], int(e.get("num_media") or 0), now=float(e["at"]),
            during_outage=True))

    def replay_in_background(self) -> None:
        """From a web process: replay without delaying the reply being sent (one thread at
        a time per process)."""
        if self.spool is None or not self.spool.pending() or not self._replaying.acquire(
                blocking=False):
            return

        def run() -> None:
            try:
                self.replay_spool()
            except Exception:
                log.exception("spool replay stopped; it is tried again later")
            finally:
                self._replaying.release()

        threading.Thread(target=run, name="spool-replay", daemon=True).start()

    def sweep_abandoned(self, now: float | None = None) -> list[dict[str, Any]]:
        """Checklists left open longer than ABANDON_AFTER_MINUTES become 'abandoned' records
        (rule 5: the care team must hear of one left after a worrying answer)."""
        now = time.time() if now is None else now
        written = []
        for phone in self.store.stale_inflight(now - self.abandon_after):
            context = self.context(phone, now)

            def step(session: dict[str, Any] | None, phone: str = phone,
                     context: dict[str, Any] = context) -> Result:
                result = self.engine.abandon(session, phone=phone, now=now,
                                             after_seconds=self.abandon_after, profile=context)
                for rec in result.records:
                    rec["unregistered"] = not context["registered"]
                    rec["risk_windows"] = context["risk_windows"]
                return result

            saved = self._sweep_one(phone, step, now)
            written.extend(saved.records)
        return written

    def _sweep_one(self, phone: str, step: Any, now: float) -> Saved:
        # No inbound text: the same transaction, with no transcript entry and the TTL kept.
        return self.store.process(phone, None, None, step, now=now)
