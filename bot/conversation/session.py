"""The patient's conversation as typed data: what the core keeps between two texts.

Only the conversation core writes it (``Engine.handle``, ``Engine.follow_up``,
``Engine.abandon``); the storage layer keeps it as a JSON object it does not look into, apart
from ``state`` (``opted_out`` outlives the session). Every saved session carries its schema
version ``v``; ``Session.from_dict`` migrates older shapes step by step (``MIGRATIONS``), so a
deploy never strands a patient mid-checklist, and ``to_dict`` leaves out empty and default
fields to keep the idle patient's footprint in Redis small.

Schema history:

* v0 (before 2026-11-26): no ``v``; ``state`` was the machine state, ``new``, ``idle``,
  ``opted_out`` or a question ``<flow>:<question>``.
* v1: ``state`` is the lifecycle state (``lifecycle.STATES``); the pending question, when there
  is one, is ``at`` (``<flow>:<question>``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

NEW, MENU, ASKING, OUTCOME, FOLLOW_UP, OPTED_OUT = (
    "new", "menu", "asking", "outcome", "follow_up", "opted_out")


@dataclass
class Fact:
    """A fact of the conversation (``fever``, ``saw_nosebleed``, ``ctx_car_t_window``): when it
    was learned and from where (a question id, ``patient_text``, ``profile``, ``flow``)."""

    at: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "from": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fact:
        return cls(float(d.get("at") or 0), str(d.get("from") or ""))


@dataclass
class Answer:
    """The answer to one question: the patient's words, the value the rules test, and how the
    care team sees it. ``from_text``: given in a text before the question was asked."""

    text: str
    value: Any
    shown: str
    from_text: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"text": self.text, "value": self.value, "shown": self.shown}
        if self.from_text:
            d["from_text"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        return cls(str(d.get("text") or ""), d.get("value"), str(d.get("shown") or ""),
                   bool(d.get("from_text")))


@dataclass
class RedFlagNote:
    """A red flag the patient wrote, with the reason and advice the care team and reply use."""

    id: str
    reason: str
    cites: str
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "cites": self.cites, "advice": self.advice}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RedFlagNote:
        return cls(str(d.get("id") or ""), str(d.get("reason") or ""), str(d.get("cites") or ""),
                   str(d.get("advice") or ""))


@dataclass
class Prior:
    """A fact carried into later conversations for ``hours`` (a borderline temperature)."""

    at: float
    hours: float

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "hours": self.hours}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        return cls(float(d.get("at") or 0), float(d.get("hours") or 0))


@dataclass
class PatientContext:
    """What the profile says, as facts the flows test, and the patient's usual scores. No name,
    no number: this is all the session keeps about the patient."""

    facts: list[str] = field(default_factory=lambda: ["ctx_unregistered"])
    usual: dict[str, float] = field(default_factory=dict)


@dataclass
class Conversation:
    """One conversation: from the first symptom text to its outcome (and a re-check of it)."""

    id: str
    episode_id: str
    started_at: float
    flows: list[str] = field(default_factory=list)      # checklists started, in order
    queue: list[str] = field(default_factory=list)      # checklists named, still to do
    answers: dict[str, Answer] = field(default_factory=dict)
    facts: dict[str, Fact] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)  # unclear answers per question
    acks: dict[str, int] = field(default_factory=dict)     # "ok" to a question, per question
    red_flags: list[RedFlagNote] = field(default_factory=list)
    signs: list[str] = field(default_factory=list)      # concepts the patient's texts named
    values: dict[str, float] = field(default_factory=dict)  # readings from the texts
    quotes: dict[str, str] = field(default_factory=dict)    # concept/value -> own words
    text_ctx: list[str] = field(default_factory=list)   # ctx_* facts from the patient's words
    partial: dict[str, list[str]] = field(default_factory=dict)  # options named, per question
    partial_shown: dict[str, str] = field(default_factory=dict)
    done: bool = False
    tier: str = ""
    red_flag_at: float | None = None
    escalated_at: float | None = None  # ended URGENT or EMERGENCY (a page went out)
    awaiting_free_text: bool = False
    context_pending: bool = False   # the rule-3 context question waits for its answer
    context_asked: bool = False
    context_due: bool = False       # ... did not fit beside the outcome: ask at the next text
    abandon_recorded: bool = False
    follow_up_of: str = ""
    follow_up_text: str = ""
    # within an episode (the hour after an URGENT or EMERGENCY outcome), what its earlier
    # conversations' texts named: "still going, 35 mins now" after a nosebleed's outcome is
    # the same bleed (answers.combine_across_texts)
    episode_signs: list[str] = field(default_factory=list)
    episode_values: dict[str, float] = field(default_factory=dict)
    episode_flows: list[str] = field(default_factory=list)  # checklists of the episode


@dataclass
class Session:
    """Everything kept between two texts of one patient."""

    state: str = NEW
    at: str = ""  # the pending question, ``<flow>:<question>``, while asking or following up
    conv: Conversation | None = None
    prior: dict[str, Prior] = field(default_factory=dict)
    emergency_at: float | None = None
    last_seen: float | None = None
    texter: str = ""  # "son", "daughter", "he", "she": a caregiver is texting; "" the patient
    risk_window: bool = False  # the profile puts the patient in a rule-3 window (this text)
    ctx: PatientContext = field(default_factory=PatientContext)

    # -- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": SCHEMA_VERSION, "state": self.state}
        if self.at:
            out["at"] = self.at
        if self.conv is not None:
            out["conv"] = _conv_to_dict(self.conv)
        if self.prior:
            out["prior"] = {k: p.to_dict() for k, p in self.prior.items()}
        for name in ("emergency_at", "last_seen", "texter"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.risk_window:
            out["risk_window"] = True
        if self.ctx.facts != ["ctx_unregistered"] or self.ctx.usual:
            out["ctx"] = {"facts": list(self.ctx.facts), "usual": dict(self.ctx.usual)}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Session:
        """A saved session of any known version, migrated to this one. ``None`` or ``{}``: a
        new patient. A version newer than this code (a rollback) is read as far as its fields
        are known, and logged."""
        if not raw:
            return cls()
        d = dict(raw)
        version = int(d.get("v") or 0)
        if version > SCHEMA_VERSION:
            log.warning("session schema v%s is newer than this code (v%s): reading known fields",
                        version, SCHEMA_VERSION)
        while version < SCHEMA_VERSION:
            d = MIGRATIONS[version](d)
            version += 1
        conv = d.get("conv")
        ctx = d.get("ctx") or {}
        return cls(
            state=str(d.get("state") or NEW),
            at=str(d.get("at") or ""),
            conv=_conv_from_dict(conv) if isinstance(conv, dict) and conv.get("id") else None,
            prior={k: Prior.from_dict(p) for k, p in (d.get("prior") or {}).items()},
            emergency_at=d.get("emergency_at"),
            last_seen=d.get("last_seen"),
            texter=str(d.get("texter") or ""),
            risk_window=bool(d.get("risk_window")),
            ctx=PatientContext(list(ctx.get("facts") or ["ctx_unregistered"]),
                               dict(ctx.get("usual") or {})),
        )


_CONV_NESTED: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "answers": (lambda m: {k: a.to_dict() for k, a in m.items()},
                lambda m: {k: Answer.from_dict(a) for k, a in (m or {}).items()}),
    "facts": (lambda m: {k: f.to_dict() for k, f in m.items()},
              lambda m: {k: Fact.from_dict(f) for k, f in (m or {}).items()}),
    "red_flags": (lambda items: [r.to_dict() for r in items],
                  lambda items: [RedFlagNote.from_dict(r) for r in (items or [])]),
}
_CONV_FIELDS = {f.name: f for f in fields(Conversation)}
_CONV_REQUIRED = ("id", "episode_id", "started_at")


def _conv_to_dict(conv: Conversation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _CONV_FIELDS:
        value = getattr(conv, name)
        if name in _CONV_NESTED:
            value = _CONV_NESTED[name][0](value)
        if name in _CONV_REQUIRED or value:
            out[name] = value
    return out


def _conv_from_dict(d: dict[str, Any]) -> Conversation:
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        if name not in _CONV_FIELDS or value is None:
            continue  # a field an older version kept and this one does not
        kwargs[name] = _CONV_NESTED[name][1](value) if name in _CONV_NESTED else value
    kwargs.setdefault("episode_id", kwargs.get("id", ""))
    kwargs.setdefault("started_at", 0.0)
    return Conversation(**kwargs)


# -- migrations: version n -> n+1, on plain dicts
def _v0_to_v1(d: dict[str, Any]) -> dict[str, Any]:
    """v0 kept the machine state ("idle", "fever:temperature"); v1 keeps the lifecycle state
    and the pending question apart."""
    state = str(d.get("state") or NEW)
    conv = d.get("conv") or {}
    if ":" in state:
        d["at"] = state
        d["state"] = FOLLOW_UP if conv.get("follow_up_of") and conv.get("follow_up_text") \
            and not conv.get("done") else ASKING
    elif state == "idle":
        d["state"] = OUTCOME if conv.get("done") else MENU
    elif state not in (NEW, OPTED_OUT):
        d["state"] = MENU
    d.pop("recorded", None)
    if isinstance(conv, dict):
        conv.pop("recorded", None)
    d["v"] = 1
    return d


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _v0_to_v1}
