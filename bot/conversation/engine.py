"""The conversation engine: knows no symptom, only the shapes in ``flows.py``.

``Engine`` is built once at start-up from the flow files; ``Engine.handle`` is pure: the saved
session (a plain dict, or None) and one text in, the reply, the triage records and the new
session out. The web layer saves the session and the records atomically; nothing in this
package touches Flask or Redis.

The package's parts (docs/architecture.md):

* ``reading.py``: one reader for every text (concepts, negation, values);
* ``answers.py``: findings into the answers of any checklist; the pending question's answer;
* ``assess.py``: the tier (combination rules 1-3, 7, 8);
* ``turn.py``: one message, from the text to the reply;
* ``lifecycle.py``: new / menu / asking / follow-up / outcome / opted out, a ``transitions``
  machine;
* ``session.py``: the typed, versioned session; ``replies.py``: placeholders and 3 segments;
* ``flows.py``, ``parsing.py``, ``context.py``: the flow files, answer parsers, patient context.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..clock import iso_utc
from . import lifecycle, parsing
from .answers import Answers
from .assess import Assessor, Finding
from .context import patient_context
from .flows import Flow, Library, Question
from .reading import Reader, Reading
from .replies import Opt, compose, fill
from .session import OPTED_OUT, Conversation, PatientContext, Session

__all__ = ["Engine", "Finding", "Opt", "Result", "compose"]


@dataclass
class Result:
    """What one message produced. ``reply`` None means: send nothing (opted out).
    ``session`` is the session to save, as a plain JSON-ready dict."""

    reply: str | None
    session: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    in_checklist: bool = False

    @property
    def pending(self) -> str | None:
        """The question now pending (``fever:temperature``), if any."""
        return self.session.get("at") or None


READ_MEMO_CHARS = 60    # texts this short have their reading remembered (Engine.read)
READ_MEMO_SIZE = 4096   # how many: about 1.1 KB a reading of 40 characters, 5 MB at most
VALUE_KEY = "="         # Engine.fill_by: a value's key (concept ids never start with it)


class Engine:
    def __init__(self, library: Library, *, oncology_line: str = "", care_team: str = "",
                 max_body_chars: int = 1600, emergency_hold_seconds: float = 24 * 3600,
                 rules_version: str = ""):
        self.lib = library
        self.rules_version = rules_version  # bot.rules_version: flows/VERSION + content hash
        self.msg = library.messages
        self.oncology_line = oncology_line or "the number your team gave you"
        self.care_team = care_team or "the number your team gave you"
        self.max_body_chars = max_body_chars
        self.emergency_hold = emergency_hold_seconds
        # One reader for every text, whatever question is pending (reading.py).
        self.reader = Reader(library.concepts, library.languages["en"],
                             combinations=library.combinations,
                             settled=library.settled)
        self.red_flag_by_id = {rf.id: rf for rf in library.red_flags}
        self.assessor = Assessor(library)
        self._index_findings()
        self.router = parsing.PhraseMatcher({f.id: f.triggers for f in library.flows.values()})
        # Triggers that count only inside the flow's context window (e.g. "shivery" goes to the
        # CRS checklist too when the patient had CAR T-cells in the last 30 days).
        self.window_router = parsing.PhraseMatcher(
            {f.id: f.window_triggers for f in library.flows.values() if f.window_triggers})
        self.machine = lifecycle.build()
        self._read_memo = lru_cache(maxsize=READ_MEMO_SIZE)(self.reader.read)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("machine")  # the lifecycle machine (transitions) is built again on load
        state.pop("_read_memo")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.machine = lifecycle.build()
        self._read_memo = lru_cache(maxsize=READ_MEMO_SIZE)(self.reader.read)

    def fillable(self, signs: Iterable[str], values: Iterable[str]) -> list[int]:
        """The ``fill_index`` entries (in its order) that one of these signs or values could
        answer."""
        found: set[int] = set()
        by = self.fill_by
        for sign in signs:
            found.update(by.get(sign, ()))
        for name in values:
            found.update(by.get(VALUE_KEY + name, ()))
        return sorted(found)

    def _index_findings(self) -> None:
        """Which questions a finding answers, and which checklists a concept leads to."""
        self.fill_index: list[tuple[Flow, Question, frozenset[str], str | None]] = []
        # sign (or VALUE_KEY + value name) -> the fill_index entries it could answer, so a
        # message looks only at those (a cost that does not grow with the flows)
        self.fill_by: dict[str, list[int]] = {}
        # the scores a reported total stands for ("ICE 7, usually 10"), in the flows' order
        self.value_scores = [sc for flow in self.lib.flows.values() for sc in flow.scores
                             if sc.value]
        self.concept_flows: dict[str, list[str]] = {}
        # (concept, flow) where the concept only answers the flow's EMERGENCY screen: "very
        # drowsy" is a fever emergency only with a fever, so it does not lead to that checklist
        # by itself when another checklist asks about it.
        self.screen_only: set[tuple[str, str]] = set()
        asked: set[tuple[str, str]] = set()
        for flow in self.lib.flows.values():
            for q in flow.questions:
                concepts = list(q.answered_by) + list(q.answered_no_by) + [
                    c for o in q.options for c in o.concepts]
                if concepts or q.value or q.type == "temperature":
                    # What could fill it: one of these signs, or this value (answers.py
                    # skips the question at once when the conversation has neither).
                    needs = set(concepts) | ({"no_thermometer"} if q.type == "temperature"
                                             else set())
                    value = ("temperature" if q.type == "temperature" else
                             q.value if q.type == "number" else None)
                    for key in (*needs, *((VALUE_KEY + value,) if value else ())):
                        self.fill_by.setdefault(key, []).append(len(self.fill_index))
                    self.fill_index.append((flow, q, frozenset(needs), value))
                for c in concepts:
                    self.concept_flows.setdefault(c, [])
                    if flow.id not in self.concept_flows[c]:
                        self.concept_flows[c].append(flow.id)
                    (self.screen_only if q.screen else asked).add((c, flow.id))
        self.screen_only -= asked

    def read(self, text: str) -> Reading:
        """The reader's reading of a text. Short texts are remembered (the same "no", "yes",
        "1" or "38.5" comes in all day, and a reading depends on the text alone); a Reading is
        never changed once made, so one can be shared."""
        text = text[: self.max_body_chars]
        if len(text) <= READ_MEMO_CHARS:
            return self._read_memo(text)
        return self.reader.read(text)

    def patient_context(self, profile: dict[str, str], now: float) -> dict[str, Any]:
        """The ``profile`` argument of ``handle``: the profile, its rule-3 windows and the
        ``ctx_*`` facts the flows test (windows from ``flows/windows.yaml``)."""
        return patient_context(profile, now, self.lib.windows)

    # ------------------------------------------------------------------ where the patient is
    def question_at(self, position: str) -> tuple[Flow, Question] | None:
        """The flow and question of a position (``fever:temperature``), or None."""
        if ":" not in (position or ""):
            return None
        fid, qid = position.split(":", 1)
        flow = self.lib.flows.get(fid)
        if flow is None:
            return None
        try:
            return flow, flow.question(qid)
        except KeyError:
            return None

    def pending(self, session: dict[str, Any] | None) -> str | None:
        """The question a saved session waits on (``fever:temperature``), or None."""
        s = Session.from_dict(session)
        if s.state not in (lifecycle.ASKING, lifecycle.FOLLOW_UP):
            return None
        return s.at if self.question_at(s.at) is not None else None

    def next_question(self, flow: Flow, conv: Conversation, risk_window: bool,
                      after: Question | None = None) -> Question | None:
        """The next question of ``flow`` (flow order) that still needs asking: not answered
        and its ``only_if`` holds. None once the tier is decided (rule 7) or none is left."""
        if self.assessor.decided(conv, risk_window, flow.id):
            return None
        qs = flow.questions
        start = qs.index(after) + 1 if after is not None else 0
        for q in qs[start:]:
            if q.id not in conv.answers and (q.only_if is None or q.only_if.holds(conv.facts)):
                return q
        return None

    def parse_answer(self, q: Question, text: str) -> Any:
        """The answer to question ``q`` a text gives, as the engine reads it: the parser for
        the question's type, else the words that answer it from anywhere in a text
        (``answered_by`` / ``answered_no_by``, option ``concepts``). None if it gives none.
        (The webhook's fallback uses it when Redis cannot be reached.)"""
        value = Answers.parse(q, text)
        if value not in (None, []):
            return value
        reading = self.read(text)
        if q.type == "yes_no":
            if any(reading.has(c) for c in q.answered_by):
                return "yes"
            if any(reading.has(c) for c in q.answered_no_by):
                return "no"
            return None
        picked = [o.id for o in q.options if any(reading.has(c) for c in o.concepts)]
        if picked:
            return picked[0] if q.type == "choice" else picked
        return value

    # ------------------------------------------------------------------ words
    def fill(self, text: str, who: str | None = None) -> str:
        return fill(text, oncology_line=self.oncology_line, care_team=self.care_team, who=who)

    compose = staticmethod(compose)

    def offered_first(self, ctx_facts: list[str] | set[str]) -> list[str]:
        """Checklists the patient's context puts first (CRS/neurotoxicity inside their
        windows, SVC for T-cell ALL), in menu order."""
        return [fid for fid in self.lib.menu
                if (w := self.lib.flows[fid].offer_first_when) is not None and w.holds(ctx_facts)]

    def menu_for(self, ctx_facts: list[str] | set[str]) -> list[str]:
        first = self.offered_first(ctx_facts)
        return first + [fid for fid in self.lib.menu if fid not in first]

    def menu_text(self, order: list[str] | None = None) -> str:
        order = list(self.lib.menu) if order is None else order
        items = [self.msg["menu_item"].format(n=i + 1, label=self.lib.flows[fid].menu_label)
                 for i, fid in enumerate(order)]
        items.append(self.msg["menu_item"].format(n=len(order) + 1,
                                                  label=self.msg["something_else_label"]))
        return self.msg["menu"].format(items=" ".join(items))

    def ask(self, q: Question, who: str | None = None) -> str:
        return self.fill(q.ask, who)

    def reask(self, q: Question, who: str | None = None) -> str:
        return self.fill(self.msg["reask"].format(question=q.ask, example=q.example), who)

    # ------------------------------------------------------------------ the message
    def handle(self, session: dict[str, Any] | None, body: str | None, *, num_media: int = 0,
               now: float | None = None, phone: str = "", profile: dict[str, Any] | None = None
               ) -> Result:
        from .turn import Turn

        now = time.time() if now is None else now
        s = Session.from_dict(session)
        apply_profile(s, profile)
        text = (body or "")[: self.max_body_chars]
        norm = " ".join(parsing.words(text))
        turn = Turn(self, s, phone, now)
        turn.cut = len(body or "") > self.max_body_chars  # said in the reply, never silent
        return turn.run(text, norm, num_media)

    # ------------------------------------------------------------------ records
    def record(self, s: Session, *, kind: str, phone: str, now: float,
               tier: str | None = None, findings: list[Finding] | None = None) -> dict[str, Any]:
        conv = s.conv
        if tier is None or findings is None:
            tier, findings = self.assessor.assess(conv, s.risk_window)
        reasons = [f.reason for f in findings if f.tier == tier] or [
            "no finding that needs a call"]
        answers = {qid: a.text for qid, a in conv.answers.items()} if conv else {}
        flows = list(conv.flows) if conv else []
        risk = conv.facts.get("risk_window") if conv else None
        risk_from = risk.source if risk else ""
        return {
            "phone": phone,
            "flow": flows[0] if flows else "red_flag",
            "flows": flows,
            "tier": tier,
            "reasons": reasons,
            "all_reasons": [f"{f.tier}: {f.reason}" for f in findings],
            "cites": sorted({f.cites for f in findings if f.cites}),
            "answers": answers,
            "kind": kind,
            "conversation_id": conv.id if conv else "",
            "episode_id": (conv.episode_id or conv.id) if conv else "",
            "quotes": dict(conv.quotes) if conv else {},
            "texter": s.texter or "patient",
            "risk_window_assumed": bool(risk_from) and not s.risk_window and (
                risk_from != "patient_text"),
            "risk_window_reported": risk_from == "patient_text",
            "rules_version": self.rules_version,
            "started_at": iso_utc(conv.started_at if conv else now) or iso_utc(now),
            "created_at": iso_utc(now),
        }

    # ------------------------------------------------------------------ calls from outside
    def follow_up(self, session: dict[str, Any] | None, flow_id: str, *, now: float,
                  after_conversation: str) -> tuple[str | None, str, Result]:
        """Re-check a patient after a SOON outcome (``bot/followup.py``). Pure, like
        ``handle``.

        Starts a new conversation of checklist ``flow_id`` (facts the flow carries, such as a
        borderline temperature, come along as ``prior_*``) and puts the session on the flow's
        follow-up question (messages.yaml ``follow_up.<flow>``: ``question`` and ``ask``), so
        the patient's reply goes through the normal webhook path. A flow without one restarts
        its checklist with ``follow_up_generic``. Returns (text to send, new conversation id,
        the result to save), or (None, why not, the session unchanged) when the patient opted
        out, started a newer conversation since ``after_conversation``, or has no session any
        more. Asked again for a follow-up already started and not answered yet (a send that
        failed), returns the same text."""
        from .turn import Turn

        unchanged = Result(None, dict(session or {}), [],
                           in_checklist=self.pending(session) is not None)
        if not session:
            return None, "no session for this patient any more (expired)", unchanged
        s = Session.from_dict(session)
        if s.state == OPTED_OUT:
            return None, "patient opted out (texted STOP)", unchanged
        conv = s.conv
        in_question = self.pending(session) is not None
        if conv and conv.follow_up_of == after_conversation and in_question and not conv.done \
                and conv.follow_up_text:
            return conv.follow_up_text, conv.id, unchanged
        if in_question or (conv and conv.id != after_conversation):
            return None, "patient started a newer conversation", unchanged
        flow = self.lib.flows.get(flow_id)
        if flow is None:
            return None, f"no checklist {flow_id!r} any more", unchanged
        turn = Turn(self, s, "", now)
        text = turn.start_follow_up(flow, after_conversation)
        if text is None:
            return None, f"checklist {flow_id!r} has no question to ask", unchanged
        return text, s.conv.id if s.conv else "", Result(None, s.to_dict(), [], in_checklist=True)

    def abandon(self, session: dict[str, Any] | None, *, phone: str, now: float,
                after_seconds: float, profile: dict[str, Any] | None = None) -> Result:
        """Rule 5: a checklist left unanswered for ``after_seconds`` becomes an 'abandoned'
        record, once (the care team must hear of one left after a worrying answer). The
        patient stays on the question: a late answer goes on as usual."""
        s = Session.from_dict(session)
        pending = self.pending(session)
        result = Result(None, dict(session or {}), [], in_checklist=pending is not None)
        conv = s.conv
        if pending is None or conv is None or conv.abandon_recorded or conv.done:
            return result
        if now - (s.last_seen or now) < after_seconds:
            return result
        apply_profile(s, profile, keep_ctx=True)
        rec = self.record(s, kind="abandoned", phone=phone, now=now)
        minutes = int(after_seconds // 60)
        rec["reasons"] = [*rec["reasons"], f"no reply for {minutes} min: checklist abandoned"]
        conv.abandon_recorded = True
        return Result(None, s.to_dict(), [rec], in_checklist=True)


def apply_profile(s: Session, profile: dict[str, Any] | None, keep_ctx: bool = False) -> None:
    """The patient's context for this message (the profile may change between texts)."""
    profile = profile or {}
    s.risk_window = bool(profile.get("risk_window"))
    if keep_ctx and not profile:
        return
    ctx = profile.get("ctx") or {}
    s.ctx = PatientContext(list(ctx.get("facts") or ["ctx_unregistered"]),
                           dict(ctx.get("usual") or {}))

