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
from .spool import Spool
from .store import Saved, Store, mask_phone

log = logging.getLogger(__name__)

# A message's Redis work is abandoned (fallback reply, spooled) once it has taken this long:
# with 0.5 s socket timeouts the reply still leaves well inside 3 s.
MESSAGE_BUDGET_SECONDS = 1.5


class TriageService:
    def __init__(self, store: Store, library: Library, engine: Engine, *,
                 abandon_after_seconds: int, spool: Spool | None = None,
                 breaker: Breaker | None = None):
        self.store = store
        self.library = library
        self.engine = engine
        self.abandon_after = abandon_after_seconds
        self.spool = spool
        if spool is not None:
            spool.retry_on = (StoreUnavailable, redis.RedisError, OSError)
        self.breaker = breaker or Breaker()
        self._replaying = threading.Lock()

    def context(self, phone: str, now: float) -> dict[str, Any]:
        return self.engine.patient_context(self.store.profile(phone), now)

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
        started = time.monotonic()
        now = time.time() if now is None else now
        context = self.context(phone, now)

        def step(session: dict[str, Any] | None) -> Result:
            if time.monotonic() - started > MESSAGE_BUDGET_SECONDS:
                raise redis.TimeoutError("message budget spent: Redis too slow")
            result = self.engine.handle(session, body, num_media=num_media, now=now,
                                        phone=phone, profile=context)
            for rec in result.records:
                rec["unregistered"] = not context["registered"]
                rec["risk_windows"] = context["risk_windows"]
                if during_outage:
                    rec["received_during_outage"] = True
                    rec["received_at"] = iso_utc(now)
            return result

        saved = self.store.process(phone, sid, body[:2000], step, now=now)
        for rec in saved.records:
            log.info("triage record tier=%s flow=%s kind=%s phone=%s", rec["tier"], rec["flow"],
                     rec["kind"], mask_phone(phone))
        return saved

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
