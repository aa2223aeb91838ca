"""The triage service: engine + store + patient context, used by the webhook, the chat tool and
the worker. Holds no per-patient state of its own (web workers are stateless)."""

from __future__ import annotations

import logging
import time
from typing import Any

from .context import engine_context, risk_window
from .engine import Engine, Result
from .flows import Library
from .store import Saved, Store, mask_phone

log = logging.getLogger(__name__)

class TriageService:
    def __init__(self, store: Store, library: Library, engine: Engine, *,
                 abandon_after_seconds: int):
        self.store = store
        self.library = library
        self.engine = engine
        self.abandon_after = abandon_after_seconds

    def context(self, phone: str, now: float) -> dict[str, Any]:
        profile = self.store.profile(phone)
        windows = risk_window(profile, now)
        return {**profile, "risk_window": bool(windows), "risk_windows": windows,
                "registered": bool(profile), "ctx": engine_context(profile, now, windows)}

    def handle_sms(self, phone: str, sid: str | None, body: str, num_media: int = 0,
                   now: float | None = None) -> Saved:
        now = time.time() if now is None else now
        context = self.context(phone, now)

        def step(session: dict[str, Any] | None) -> Result:
            result = self.engine.handle(session, body, num_media=num_media, now=now,
                                        phone=phone, profile=context)
            for rec in result.records:
                rec["unregistered"] = not context["registered"]
                rec["risk_windows"] = context["risk_windows"]
            return result

        saved = self.store.process(phone, sid, body[:2000], step, now=now)
        for rec in saved.records:
            log.info("triage record tier=%s flow=%s kind=%s phone=%s", rec["tier"], rec["flow"],
                     rec["kind"], mask_phone(phone))
        return saved

    def sweep_abandoned(self, now: float | None = None) -> list[dict[str, Any]]:
        """Checklists left open longer than ABANDON_AFTER_MINUTES become 'abandoned' records
        (rule 5: the care team must hear of one left after a worrying answer)."""
        now = time.time() if now is None else now
        written = []
        for phone in self.store.stale_inflight(now - self.abandon_after):
            context = self.context(phone, now)

            def step(session: dict[str, Any] | None, phone: str = phone,
                     context: dict[str, Any] = context) -> Result:
                result = Result(None, session or {}, [], in_checklist=False)
                if not session or self.engine.question_at(session.get("state", "")) is None:
                    return result
                if now - session.get("last_seen", now) < self.abandon_after:
                    result.in_checklist = True
                    return result
                conv = session.get("conv") or {}
                if conv.get("abandon_recorded") or conv.get("done"):
                    return result
                session["risk_window"] = context["risk_window"]
                rec = self.engine.record(session, kind="abandoned", phone=phone, now=now)
                minutes = int(self.abandon_after // 60)
                rec["reasons"] = [*rec["reasons"], f"no reply for {minutes} min: checklist "
                                  "abandoned"]
                rec["unregistered"] = not context["registered"]
                rec["risk_windows"] = context["risk_windows"]
                conv["abandon_recorded"] = True
                result.records.append(rec)
                return result

            saved = self._sweep_one(phone, step, now)
            written.extend(saved.records)
        return written

    def _sweep_one(self, phone: str, step: Any, now: float) -> Saved:
        # No inbound text: the same transaction, with no transcript entry and the TTL kept.
        return self.store.process(phone, None, None, step, now=now)
