"""The conversation engine: knows no symptom, only the shapes in ``flows.py``.

One ``transitions`` Machine holds every checklist's questions as states (``fever:temperature``),
built once at start-up with ``model=None``. For each message the patient's saved state is put
on a light ``Chat`` object, attached to the machine, triggered, and detached again.

``Engine.handle`` is pure: session in, reply + triage records + session out. The web layer
saves the session and the records atomically; nothing here touches Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from transitions import EventData, Machine

from . import parsing
from .flows import TIER_RANK, Flow, Library, Question, Rule, raise_tier, tier_max
from .sms import MAX_SEGMENTS, segments, to_gsm7

NEW, IDLE, OPTED_OUT = "new", "idle", "opted_out"

STOP_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "opt out"}
START_WORDS = {"start", "unstop", "subscribe", "optin", "opt in"}
HELP_WORDS = {"help", "info", "helpme", "help me"}
MENU_WORDS = {"menu", "restart", "start over", "reset", "main menu", "begin again", "back"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def state_of(flow: Flow, q: Question) -> str:
    return f"{flow.id}:{q.id}"


@dataclass(frozen=True)
class Opt:
    """An optional part of a reply: dropped if the reply would pass 3 SMS segments."""

    text: str


@dataclass
class Finding:
    tier: str
    reason: str
    cites: str
    advice: str = ""
    rule: str = ""


@dataclass
class Result:
    """What one message produced. ``reply`` None means: send nothing (opted out)."""

    reply: str | None
    session: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    in_checklist: bool = False


class Chat:
    """The light model the machine moves: the saved session, as attributes."""

    def __init__(self, session: dict[str, Any]):
        self.session = session
        self.state: str = session.get("state", NEW)


def new_session() -> dict[str, Any]:
    return {"state": NEW, "conv": None, "prior": {}, "emergency_at": None}


class Engine:
    def __init__(self, library: Library, *, oncology_line: str = "", care_team: str = "",
                 max_body_chars: int = 1600, emergency_hold_seconds: float = 24 * 3600):
        self.lib = library
        self.msg = library.messages
        self.oncology_line = oncology_line or "the number your team gave you"
        self.care_team = care_team or "the number your team gave you"
        self.max_body_chars = max_body_chars
        self.emergency_hold = emergency_hold_seconds
        self.red_flags = parsing.PhraseMatcher({rf.id: rf.phrases for rf in library.red_flags})
        self.red_flag_by_id = {rf.id: rf for rf in library.red_flags}
        self.router = parsing.PhraseMatcher({f.id: f.triggers for f in library.flows.values()})
        # Triggers that count only inside the flow's context window (e.g. "shivery" goes to the
        # CRS checklist too when the patient had CAR T-cells in the last 30 days).
        self.window_router = parsing.PhraseMatcher(
            {f.id: f.window_triggers for f in library.flows.values() if f.window_triggers})
        self.rules: list[tuple[Flow, Rule]] = library.all_rules()  # every checklist's rules
        self.machine = self._build_machine()

    # ------------------------------------------------------------------ the state machine
    def _build_machine(self) -> Machine:
        flows = list(self.lib.flows.values())
        question_states = [state_of(f, q) for f in flows for q in f.questions]
        machine = Machine(model=None, states=[NEW, IDLE, OPTED_OUT, *question_states],
                          initial=None, auto_transitions=False, send_event=True)
        decided = self._decided
        for flow in flows:
            qs = flow.questions
            trigger = f"start_{flow.id}"
            machine.add_transition(trigger, [NEW, IDLE], IDLE, conditions=[decided])
            for q in qs:
                machine.add_transition(trigger, [NEW, IDLE], state_of(flow, q),
                                       conditions=[self._applies(q)])
            machine.add_transition(trigger, [NEW, IDLE], IDLE)
            for i, q in enumerate(qs):
                source = state_of(flow, q)
                machine.add_transition("advance", source, IDLE, conditions=[decided])
                for later in qs[i + 1:]:
                    machine.add_transition("advance", source, state_of(flow, later),
                                           conditions=[self._applies(later)])
                machine.add_transition("advance", source, IDLE)
        everywhere = [NEW, IDLE, *question_states]
        machine.add_transition("reset", everywhere, IDLE)
        machine.add_transition("red_flag", everywhere, IDLE)
        machine.add_transition("opt_out", [*everywhere, OPTED_OUT], OPTED_OUT)
        machine.add_transition("opt_in", OPTED_OUT, IDLE)
        return machine

    def _decided(self, event: EventData) -> bool:
        """Rule 7: stop asking as soon as the answer is EMERGENCY or URGENT."""
        conv = event.model.session["conv"]
        tier = self.assess(conv, event.model.session)[0]
        return TIER_RANK[tier] >= TIER_RANK["URGENT"]

    @staticmethod
    def _applies(q: Question) -> Callable[[EventData], bool]:
        def applies(event: EventData) -> bool:
            conv = event.model.session["conv"]
            if q.id in conv["answers"]:
                return False
            return q.only_if is None or q.only_if.holds(conv["facts"])
        return applies

    def _fire(self, session: dict[str, Any], trigger: str) -> str:
        chat = Chat(session)
        self.machine.add_model(chat, initial=chat.state)
        try:
            chat.trigger(trigger)
        finally:
            self.machine.remove_model(chat)
        session["state"] = chat.state
        return chat.state

    def question_at(self, state: str) -> tuple[Flow, Question] | None:
        if ":" not in state:
            return None
        fid, qid = state.split(":", 1)
        flow = self.lib.flows.get(fid)
        if flow is None:
            return None
        try:
            return flow, flow.question(qid)
        except KeyError:
            return None

    # ------------------------------------------------------------------ assessment
    def assess(self, conv: dict[str, Any] | None, session: dict[str, Any]
               ) -> tuple[str, list[Finding]]:
        """Every rule of every checklist over the conversation's facts (so a fever reported in
        another checklist still counts), then the combination rules 1-3 and the EMERGENCY hold."""
        if conv is None:
            return "ROUTINE", []
        facts = conv["facts"]
        # Rule 3: the profile's windows, or an answer that set the fact ``risk_window`` (the
        # context question an unregistered number is asked, e.g. CAR-T in the last 4 weeks).
        risk = bool(session.get("risk_window")) or "risk_window" in facts
        findings: list[Finding] = []
        soon_count = 0
        for flow, rule in self.rules:
            matched = rule.when.matched(facts)
            if not matched:
                continue
            tier = raise_tier(rule.tier) if rule.infection and risk else rule.tier
            reason = self._reason(rule, conv)
            if tier != rule.tier:
                reason += " (risk window: one tier up)"
            findings.append(Finding(tier, reason, rule.cites, rule.advice, f"{flow.id}.{rule.id}"))
            if tier == "SOON":
                soon_count += len(matched)
        for flag in conv.get("red_flags", []):
            findings.append(Finding("EMERGENCY", flag["reason"], flag["cites"], flag["advice"],
                                    f"red_flags.{flag['id']}"))
        tier = tier_max(*(f.tier for f in findings))
        if soon_count >= 2 and TIER_RANK[tier] < TIER_RANK["URGENT"]:
            tier = "URGENT"
            soon = "; ".join(f.reason for f in findings if f.tier == "SOON")
            findings.append(Finding("URGENT", f"two or more findings that each need a call "
                                    f"today: {soon}",
                                    "clinical-rules.md > How answers combine > rule 2"))
        return tier, findings

    @staticmethod
    def _reason(rule: Rule, conv: dict[str, Any]) -> str:
        shown = {qid: a.get("shown", a.get("text", "")) for qid, a in conv["answers"].items()}

        class _Missing(dict[str, str]):
            def __missing__(self, key: str) -> str:
                return "?"

        return rule.reason.format_map(_Missing(shown))

    # ------------------------------------------------------------------ messages
    def fill(self, text: str) -> str:
        return text.format(oncology_line=self.oncology_line, care_team=self.care_team)

    @staticmethod
    def compose(*parts: str | Opt) -> str:
        """Join parts in order. Plain strings always stay; ``Opt`` parts are added, first to
        last, only while the whole reply still fits in 3 SMS segments."""
        items = []
        for p in parts:
            text = (p.text if isinstance(p, Opt) else p or "").strip()
            if text:
                items.append((text, isinstance(p, Opt)))
        keep = [not optional for _, optional in items]

        def joined() -> str:
            return " ".join(t for (t, _), k in zip(items, keep, strict=True) if k)

        for i, (_, optional) in enumerate(items):
            if optional:
                keep[i] = True
                if segments(joined()) > MAX_SEGMENTS:
                    keep[i] = False
        return joined()

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
        return self.msg["menu"].format(items=" ".join(items))

    def ask(self, q: Question) -> str:
        return q.ask

    def reask(self, q: Question) -> str:
        return self.msg["reask"].format(question=q.ask, example=q.example)

    # ------------------------------------------------------------------ the message
    def handle(self, session: dict[str, Any] | None, body: str | None, *, num_media: int = 0,
               now: float | None = None, phone: str = "", profile: dict[str, Any] | None = None
               ) -> Result:
        now = time.time() if now is None else now
        session = session if session else new_session()
        session.setdefault("prior", {})
        session["risk_window"] = bool((profile or {}).get("risk_window"))
        session["ctx"] = (profile or {}).get("ctx") or {"facts": ["ctx_unregistered"],
                                                        "usual": {}}
        text = (body or "")[: self.max_body_chars]
        norm = " ".join(parsing.words(text))
        ctx = _Turn(self, session, phone, now)
        return ctx.run(text, norm, num_media)

    # ------------------------------------------------------------------ records
    def record(self, session: dict[str, Any], *, kind: str, phone: str, now: float,
               tier: str | None = None, findings: list[Finding] | None = None) -> dict[str, Any]:
        conv = session.get("conv") or {}
        if tier is None or findings is None:
            tier, findings = self.assess(conv or None, session)
        reasons = [f.reason for f in findings if f.tier == tier] or [
            "no finding that needs a call"]
        answers = {qid: a.get("text", "") for qid, a in (conv.get("answers") or {}).items()}
        flows = conv.get("flows") or []
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
            "conversation_id": conv.get("id", ""),
            "started_at": iso(conv.get("started_at", now)),
            "created_at": iso(now),
        }

    # ------------------------------------------------------------------ follow-ups
    def start_follow_up(self, session: dict[str, Any] | None, flow_id: str, *, now: float,
                        after_conversation: str) -> tuple[str | None, str]:
        """Re-check a patient after a SOON outcome (``bot/followup.py``). Pure, like
        ``handle``: changes ``session`` only.

        Starts a new conversation of checklist ``flow_id`` (facts the flow carries, such as a
        borderline temperature, come along as ``prior_*``) and puts the session on the flow's
        follow-up question (messages.yaml ``follow_up.<flow>``: ``question`` and ``ask``), so
        the patient's reply goes through the normal webhook path. A flow without one restarts
        its checklist with ``follow_up_generic``. Returns (text to send, new conversation id),
        or (None, why not) when the patient opted out, started a newer conversation since
        ``after_conversation``, or has no session any more. Asked again for a follow-up already
        started and not answered yet (a send that failed), returns the same text."""
        if not session:
            return None, "no session for this patient any more (expired)"
        if session.get("state") == OPTED_OUT:
            return None, "patient opted out (texted STOP)"
        conv = session.get("conv") or {}
        in_question = self.question_at(session.get("state", "")) is not None
        if conv.get("follow_up_of") == after_conversation and in_question and not conv.get(
                "done") and conv.get("follow_up_text"):
            return conv["follow_up_text"], conv["id"]
        if in_question or (conv and conv.get("id") != after_conversation):
            return None, "patient started a newer conversation"
        flow = self.lib.flows.get(flow_id)
        if flow is None:
            return None, f"no checklist {flow_id!r} any more"
        turn = _Turn(self, session, "", now)
        conv = turn.start_conv()
        conv["follow_up_of"] = after_conversation
        turn.start_flow(flow_id, "")  # the checklist starts as it would from the menu
        current = self.question_at(session["state"])
        if current is None:
            return None, f"checklist {flow_id!r} has no question to ask"
        spec = (self.msg.get("follow_up") or {}).get(flow_id) or {}
        question = next((q for q in flow.questions if q.id == spec.get("question")), None)
        if question is not None and spec.get("ask"):
            # Straight on to the re-check question (a state of the same checklist).
            session["state"] = state_of(flow, question)
            text = spec["ask"]
        else:
            text = self.msg["follow_up_generic"].format(title=flow.title.lower(),
                                                        question=self.ask(current[1]))
        text = to_gsm7(" ".join(self.fill(text).split()))
        conv["follow_up_text"] = text
        session["last_seen"] = now
        return text, conv["id"]


class _Turn:
    """One inbound message, start to reply."""

    def __init__(self, engine: Engine, session: dict[str, Any], phone: str, now: float):
        self.e = engine
        self.s = session
        self.phone = phone
        self.now = now
        self.records: list[dict[str, Any]] = []
        self.m = engine.msg
        self.intro = ""  # a mandatory first part of this turn's reply (first-contact line)

    # -- helpers
    def result(self, reply: str | None) -> Result:
        self.s["last_seen"] = self.now
        if reply is not None:
            reply = to_gsm7(reply)
        return Result(reply, self.s, self.records,
                      in_checklist=self.e.question_at(self.s["state"]) is not None)

    def start_conv(self) -> dict[str, Any]:
        prior = {k: v for k, v in self.s.get("prior", {}).items()
                 if self.now - v.get("at", 0) <= v.get("hours", 0) * 3600}
        self.s["prior"] = prior
        conv = {
            "id": uuid.uuid4().hex[:12], "started_at": self.now, "flows": [], "queue": [],
            "answers": {}, "facts": {f"prior_{k}": v for k, v in prior.items()}, "retries": {},
            "red_flags": [], "recorded": False,
        }
        self.s["conv"] = conv
        self.sync_context()
        return conv

    def ctx_facts(self) -> list[str]:
        return list((self.s.get("ctx") or {}).get("facts") or ["ctx_unregistered"])

    def sync_context(self) -> None:
        """The patient's context (bot/context.py) as ``ctx_*`` facts of the conversation,
        refreshed every message so a profile edited mid-checklist counts at once."""
        conv = self.s.get("conv")
        if not conv:
            return
        facts = conv["facts"]
        for name in [n for n in facts if n.startswith("ctx_")]:
            del facts[name]
        for name in self.ctx_facts():
            facts[name] = {"at": self.now, "from": "profile"}

    def menu(self) -> list[str]:
        return self.e.menu_for(self.ctx_facts())

    def menu_text(self) -> str:
        return self.e.menu_text(self.menu())

    def conv(self) -> dict[str, Any]:
        conv = self.s.get("conv")
        if conv is None or conv.get("done"):
            conv = self.start_conv()
        return conv

    def in_progress(self) -> bool:
        return self.e.question_at(self.s["state"]) is not None

    def current_question(self) -> tuple[Flow, Question] | None:
        return self.e.question_at(self.s["state"])

    def abandon_if_in_progress(self, why: str) -> None:
        conv = self.s.get("conv")
        if self.in_progress() and conv and conv["answers"] and not conv.get("done"):
            rec = self.e.record(self.s, kind="abandoned", phone=self.phone, now=self.now)
            rec["reasons"] = [*rec["reasons"], f"checklist left unfinished ({why})"]
            self.records.append(rec)
            conv["done"] = True

    # -- the turn
    def run(self, text: str, norm: str, num_media: int) -> Result:
        state = self.s["state"]
        self.sync_context()
        flags = self.e.red_flags.find(text) if norm else []

        if state == OPTED_OUT:
            if norm in START_WORDS or norm == "yes":
                self.e._fire(self.s, "opt_in")
                return self.result(self.e.compose(self.m["started"], Opt(self.menu_text())))
            if flags:
                # Carriers block texts to an opted-out number, but the care team must hear of it.
                self.red_flag_record(flags, silent=True)
            return self.result(None)

        if norm in STOP_WORDS:
            self.abandon_if_in_progress("patient opted out")
            self.e._fire(self.s, "opt_out")
            return self.result(self.m["stopped"])

        if flags:
            return self.result(self.red_flag(flags))

        if norm in HELP_WORDS:
            return self.result(self.e.compose(self.m["help"], self.pending_prompt()))

        if norm in MENU_WORDS:
            self.abandon_if_in_progress("patient asked for the menu")
            self.e._fire(self.s, "reset")
            self.s["conv"] = None
            return self.result(self.e.compose(self.m["restart"], self.menu_text()))

        if norm in START_WORDS:
            return self.result(self.e.compose(self.m["already_opted_out"], self.pending_prompt()))

        if not norm:
            notice = self.m["photo"] if num_media else self.m["empty"]
            if state == NEW:
                return self.result(self.e.compose(self.m["greeting"], notice,
                                                  self.menu_text()))
            return self.result(self.e.compose(notice, self.pending_prompt()))

        if state == NEW:
            return self.result(self.first_contact(text, norm))
        if state == IDLE and self.context_pending():
            return self.result(self.context_answer(text, norm))
        if state == IDLE and self.context_due(text, norm):
            return self.result(self.m["context_question"])
        if state == IDLE:
            return self.result(self.route(text, norm) or self.e.compose(
                self.m["not_understood_menu"], self.menu_text()))
        return self.result(self.answer(text))

    def pending_prompt(self) -> str:
        cur = self.current_question()
        if cur:
            return self.e.ask(cur[1])
        return self.menu_text()

    # -- red flags
    def red_flag_record(self, flags: list[tuple[str, str]], silent: bool = False) -> str:
        conv = self.conv()
        for flag_id, phrase in flags:
            rf = self.e.red_flag_by_id[flag_id]
            if not any(f["id"] == flag_id for f in conv["red_flags"]):
                conv["red_flags"].append({"id": rf.id, "reason": f"{rf.reason} ('{phrase}')",
                                          "cites": rf.cites, "advice": rf.advice})
        self.s["emergency_at"] = self.now
        rec = self.e.record(self.s, kind="red_flag_opted_out" if silent else "red_flag",
                            phone=self.phone, now=self.now)
        self.records.append(rec)
        conv["done"] = True
        return self.e.red_flag_by_id[flags[0][0]].advice

    def red_flag(self, flags: list[tuple[str, str]]) -> str:
        advice = list(dict.fromkeys(self.e.red_flag_by_id[fid].advice for fid, _ in flags))
        self.red_flag_record(flags)
        self.e._fire(self.s, "red_flag")
        return self.e.compose(self.e.fill(self.m["red_flag"]), *(Opt(a) for a in advice),
                              Opt(self.e.fill(self.m["red_flag_after"])))

    # -- routing
    def first_contact(self, text: str, norm: str) -> str:
        started = self.route(text, norm, greeting=True)
        if started:
            return started
        self.e._fire(self.s, "reset")
        return self.e.compose(self.m["greeting"], self.menu_text())

    def pick_from_menu(self, norm: str) -> str | None:
        toks = norm.split()
        menu = self.menu()
        if len(toks) == 1 and toks[0].isdigit():
            i = int(toks[0]) - 1
            if 0 <= i < len(menu):
                return menu[i]
        for fid in menu:
            flow = self.e.lib.flows[fid]
            if norm in {fid, " ".join(parsing.words(flow.title)),
                        " ".join(parsing.words(flow.menu_label))}:
                return fid
        return None

    def route(self, text: str, norm: str, greeting: bool = False) -> str | None:
        picked = self.pick_from_menu(norm)
        flow_ids = [picked] if picked else self.flows_named_in(text)
        if not flow_ids:
            flow_ids = self.flows_answered_by(text)
        if not flow_ids:
            return None
        conv = self.start_conv()
        conv["queue"] = flow_ids[1:]
        if greeting:  # first contact: the not-for-emergencies line leads the same reply
            self.intro = self.m["greeting_short"]
        return self.start_flow(flow_ids[0], text if not picked else "")

    def flows_named_in(self, text: str) -> list[str]:
        """Checklists whose triggers the text contains, in order of appearance; the ones the
        patient's context offers first (and their window triggers) go to the front."""
        first = self.e.offered_first(self.ctx_facts())
        found = [fid for fid, _ in self.e.router.find(text)]
        found += [fid for fid, _ in self.e.window_router.find(text)
                  if fid in first and fid not in found]
        return [f for f in first if f in found] + [f for f in found if f not in first]

    def flows_answered_by(self, text: str) -> list[str]:
        """A bare answer with no symptom word ("37.7", "101F") starts the first checklist, in
        this patient's menu order, whose prefill question understands it (one only: a bare
        reading is one symptom; the CRS checklist comes first inside its window)."""
        for fid in self.menu():
            for q in self.e.lib.flows[fid].questions:
                if q.prefill and q.type in ("temperature", "number"):
                    value = self.parse(q, text)
                    if value is not None and value != "none":
                        return [fid]
        return []

    def start_flow(self, flow_id: str, text: str) -> str:
        conv = self.s["conv"]
        flow = self.e.lib.flows[flow_id]
        conv["flows"].append(flow_id)
        # A rule may be scoped to its own checklist with the fact flow_<id> (set once the
        # checklist has started), so that a shared fact (fever) does not repeat a finding in
        # a conversation that never reached that checklist.
        conv["facts"][f"flow_{flow_id}"] = {"at": self.now, "from": "flow"}
        if text:
            self.prefill(flow, text)
        self.e._fire(self.s, f"start_{flow_id}")
        return self.after_move()

    def prefill(self, flow: Flow, text: str) -> None:
        for q in flow.questions:
            if not q.prefill or q.id in self.s["conv"]["answers"]:
                continue
            value = self.parse(q, text)
            if value is not None and value != "none":
                self.store(q, value, text)

    # -- answers
    def parse(self, q: Question, text: str) -> Any:
        if q.type == "yes_no":
            yn = parsing.parse_yes_no(text)
            return None if yn is None else ("yes" if yn else "no")
        if q.type == "temperature":
            t = parsing.parse_temperature(text)
            if t is not None:
                return t
            return "none" if parsing.says_no_thermometer(text) else None
        if q.type == "number":
            number = parsing.parse_number(text, q.minimum, q.maximum)
            if number is None and q.minimum is not None and q.minimum > 0 and (
                    parsing.parse_yes_no(text) is False or parsing.says_no_thermometer(text)):
                return "none"  # "no", "none", "don't have one": no device to read
            return number
        if q.type == "choice":
            return parsing.parse_choice(text, q.options)
        if q.type == "multi_choice":
            return parsing.parse_choices(text, q.options)
        return text.strip() or None  # free text

    def store(self, q: Question, value: Any, raw: str, shown: str | None = None) -> None:
        conv = self.s["conv"]
        numeric: Any = value
        if isinstance(value, parsing.Temperature):
            numeric = value.celsius
            shown = shown or value.text
        elif isinstance(value, list):
            labels = {o.id: o.label for o in q.options}
            shown = shown or (", ".join(labels[v] for v in value) if value else "none")
        elif q.type == "choice":
            shown = shown or {o.id: o.label for o in q.options}.get(value, str(value))
        elif isinstance(value, float):
            shown = shown or f"{value:g}"
        conv["answers"][q.id] = {"text": to_gsm7(raw.strip())[:300], "value": numeric,
                                 "shown": shown or str(value)}
        for rule in q.sets:
            if rule.when.holds(numeric):
                conv["facts"][rule.fact] = {"at": self.now, "from": q.id}
        if q.score is not None:
            self.update_score(q.score)

    def update_score(self, score_id: str) -> None:
        """Sum a score's answered questions; set its ``below_usual`` fact as soon as the
        points already lost make the patient's usual total unreachable."""
        conv = self.s["conv"]
        for flow in self.e.lib.flows.values():
            for sc in flow.scores:
                if sc.id != score_id:
                    continue
                got = lost = 0.0
                answered = 0
                for qid in sc.questions:
                    a = conv["answers"].get(qid)
                    if a is None:
                        continue
                    q = flow.question(qid)
                    value = a.get("value")
                    points = (1.0 if value == "yes" else 0.0) if q.type == "yes_no" else (
                        float(value) if isinstance(value, int | float) else 0.0)
                    got += points
                    lost += q.points() - points
                    answered += 1
                usual_raw = (self.s.get("ctx") or {}).get("usual", {}).get(sc.usual_field)
                usual = float(usual_raw) if usual_raw is not None else sc.usual_default
                done = answered == len(sc.questions)
                shown = (f"{got:g} of {sc.max:g}" if done else
                         f"{got:g} of {sc.max:g} so far, {lost:g} lost")
                shown += f" (usual {usual:g}{'' if usual_raw is not None else ', not known'})"
                conv["answers"][sc.id] = {"text": shown, "value": got, "shown": shown}
                if sc.max - lost < usual:
                    conv["facts"][sc.below_usual] = {"at": self.now, "from": sc.id}

    def answer(self, text: str) -> str:
        cur = self.current_question()
        assert cur is not None
        _flow, q = cur
        conv = self.conv()
        value = self.parse(q, text)
        lead = ""
        if value is None:
            tries = conv["retries"].get(q.id, 0) + 1
            conv["retries"][q.id] = tries
            other = [fid for fid, _ in self.e.router.find(text)
                     if fid not in conv["flows"] and fid not in conv["queue"]]
            if other:
                conv["queue"].extend(other)
                names = ", ".join(self.e.lib.flows[f].title.lower() for f in other)
                note = self.m["queued"].format(names=names)
                if tries < 2:
                    return self.e.compose(Opt(note), self.e.reask(q))
                lead = note
            if tries < 2:
                if q.type == "multi_choice" and parsing.parse_yes_no(text):
                    # "yes" to "any of these?": ask which, not "we did not understand"
                    return self.m["reask_which"].format(question=q.ask, example=q.example)
                return self.e.reask(q)
            if q.red_flag:
                worse = q.worse
                worse_shown = str(worse)
                if q.type == "temperature":
                    worse_value: Any = parsing.parse_temperature(f"{worse} c") or worse
                elif q.type in ("choice", "multi_choice"):
                    worse_value = worse
                    labels = {o.id: o.label for o in q.options}
                    ids = worse if isinstance(worse, list) else [worse]
                    worse_shown = ", ".join(labels[i] for i in ids)
                else:
                    worse_value = worse
                self.store(q, worse_value, text, shown=f"unclear, taken as {worse_shown}")
                lead = " ".join(x for x in (lead, self.m["unsure_taken_worse"]) if x)
            else:
                conv["answers"][q.id] = {"text": to_gsm7(text.strip())[:300], "value": None,
                                         "shown": "unclear"}
        else:
            self.store(q, value, text)
        self.e._fire(self.s, "advance")
        return self.after_move(lead)

    def after_move(self, lead: str = "") -> str:
        """Reply after the machine moved: the next question, or the outcome."""
        cur = self.current_question()
        if cur is not None:
            return self.e.compose(self.intro, Opt(lead), self.e.ask(cur[1]))
        conv = self.s["conv"]
        tier, _ = self.e.assess(conv, self.s)
        if TIER_RANK[tier] < TIER_RANK["URGENT"]:
            while conv["queue"]:
                nxt = conv["queue"].pop(0)
                if nxt in conv["flows"]:
                    continue
                note = self.m["next_checklist"].format(title=self.e.lib.flows[nxt].title)
                return self.e.compose(Opt(lead), Opt(note), self.start_flow(nxt, ""))
        return self.outcome(lead)

    def outcome(self, lead: str = "") -> str:
        conv = self.s["conv"]
        tier, findings = self.e.assess(conv, self.s)
        held = self.s.get("emergency_at") and self.now - self.s["emergency_at"] < \
            self.e.emergency_hold
        if held and tier != "EMERGENCY":
            tier = "EMERGENCY"
            findings.append(Finding("EMERGENCY", "an emergency sign was reported earlier; never "
                                    "downgraded", "clinical-rules.md > The four tiers > EMERGENCY"))
        if tier == "EMERGENCY":
            self.s["emergency_at"] = self.s.get("emergency_at") or self.now
        self.records.append(self.e.record(self.s, kind="completed", phone=self.phone,
                                          now=self.now, tier=tier, findings=findings))
        conv["done"] = True
        # facts a later conversation needs (e.g. a borderline temperature to re-check)
        for fid in conv["flows"]:
            for fact, hours in self.e.lib.flows[fid].carry_facts.items():
                if fact in conv["facts"]:
                    self.s["prior"][fact] = {"at": self.now, "hours": hours}
        advice = []
        for f in findings:
            if f.tier == tier and f.advice and f.advice not in advice:
                advice.append(f.advice)
        self_care = ""
        if tier in ("ROUTINE", "SOON"):
            flows = [self.e.lib.flows[fid] for fid in conv["flows"]]
            self_care = " ".join(f.self_care for f in flows[:1])
        # The tier's words come first (EMERGENCY: "Call 911 now." before anything else).
        parts: list[str | Opt] = [self.intro, self.e.fill(self.m["tier"][tier])]
        question = self.context_question_due(conv, tier)
        if question:  # before advice: it may raise the tier (rule 3)
            parts += [Opt(lead), Opt(question)]
            lead = ""
        parts += [Opt(a) for a in advice]
        if tier in ("ROUTINE", "SOON"):
            parts.append(Opt(self_care))
        parts += [Opt(lead)]
        if not question:
            parts.append(Opt(self.m.get("after_outcome", "")))
        reply = self.e.compose(*parts)
        if question and question in reply:
            conv["context_pending"] = True
            conv["context_asked"] = True
        elif question:  # no room beside the first-contact line: ask at the next text
            conv["context_due"] = True
        return reply

    # -- the context question an unregistered number is asked after its outcome (rule 3)
    def context_question_due(self, conv: dict[str, Any], tier: str) -> str:
        """Unregistered number, no risk window known, and being in one would raise the tier:
        ask once, after the answer (rule 7: what to do first, extra questions after). Unknown
        context must never lower a tier, so the question is asked whenever it could matter."""
        question = self.m.get("context_question", "")
        if (not question or conv.get("context_asked") or tier == "EMERGENCY"
                or "ctx_unregistered" not in conv["facts"] or "risk_window" in conv["facts"]
                or self.s.get("risk_window")):
            return ""
        raised, _ = self.e.assess(conv, {**self.s, "risk_window": True})
        return question if TIER_RANK[raised] > TIER_RANK[tier] else ""

    def context_due(self, text: str, norm: str) -> bool:
        """The question did not fit beside the outcome: the next text that is not a new
        symptom ("ok", "thanks") gets it."""
        conv = self.s.get("conv")
        if not conv or not conv.get("context_due"):
            return False
        conv["context_due"] = False
        if self.pick_from_menu(norm) or self.flows_named_in(text) or self.flows_answered_by(text):
            return False
        conv["context_pending"] = conv["context_asked"] = True
        return True

    def context_pending(self) -> bool:
        conv = self.s.get("conv")
        return bool(conv and conv.get("context_pending"))

    def context_answer(self, text: str, norm: str) -> str:
        """YES (or an answer that is neither yes, no, nor a new symptom: taken as yes, the
        worse reading) puts the conversation in a risk window and gives the raised outcome;
        NO keeps it; a new symptom or reading starts its checklist as usual."""
        conv = self.s["conv"]
        conv["context_pending"] = False
        yes = parsing.parse_yes_no(text)
        if yes is None and (self.pick_from_menu(norm) or self.flows_named_in(text)
                            or self.flows_answered_by(text)):
            return self.route(text, norm) or self.menu_text()
        conv["answers"]["risk_window_context"] = {
            "text": to_gsm7(text.strip())[:300], "value": "no" if yes is False else "yes",
            "shown": {True: "yes", False: "no"}.get(yes, "unclear, taken as yes")}
        if yes is False:
            return self.e.compose(self.m["context_thanks"], Opt(self.m.get("after_outcome", "")))
        conv["facts"]["risk_window"] = {"at": self.now, "from": "risk_window_context"}
        return self.outcome()
