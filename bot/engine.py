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
from .context import CAR_T_CRS_DAYS, CAR_T_ICANS_DAYS, CHEMO_WINDOW_DAYS
from .conversation.reading import Reader, Reading
from .flows import TIER_RANK, Flow, Library, Question, Rule, tier_max
from .sms import MAX_SEGMENTS, segments, to_gsm7

NEW, IDLE, OPTED_OUT = "new", "idle", "opted_out"
SOMETHING_ELSE = "__something_else__"

STOP_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "opt out"}
START_WORDS = {"start", "unstop", "subscribe", "optin", "opt in"}
HELP_WORDS = {"help", "info", "helpme", "help me"}
MENU_WORDS = {"menu", "restart", "start over", "reset", "main menu", "begin again", "back"}
# A text that acknowledges and answers nothing: never a yes (a parent who typed "ok" to "any of
# these emergency signs?" was told to call 911), never "did not understand" after an outcome.
ACK_WORDS = {"ok", "okay", "k", "kk", "okk", "ok thanks", "ok thank you", "okay thanks", "thanks",
             "thank you", "thanks so much", "thank you so much", "ty", "thx", "cheers", "got it",
             "right", "alright", "all right", "cool", "will do", "ok will do", "ok got it",
             "noted", "understood", "great", "great thanks", "perfect", "fine", "ok will call",
             "ok calling now", "calling now", "ok ty", "ok thx", "k thanks", "thanks will do"}
AFTER_OUTCOME_WORDS = {"yes", "no", "no thanks", "nope", "yes thanks", "yep", "y", "n", "bye",
                       "goodbye", "thats all", "nothing else", "will call now", "calling"}
NONE_WORDS = {"none", "no", "nope", "nah", "na", "n a", "nil", "not got one", "dont have one",
              "no thermometer", "havent got one", "no reading", "cant", "cant check"}


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
                 max_body_chars: int = 1600, emergency_hold_seconds: float = 24 * 3600,
                 rules_version: str = ""):
        self.lib = library
        self.rules_version = rules_version  # bot.rules_version: flows/VERSION + content hash
        self.msg = library.messages
        self.oncology_line = oncology_line or "the number your team gave you"
        self.care_team = care_team or "the number your team gave you"
        self.max_body_chars = max_body_chars
        self.emergency_hold = emergency_hold_seconds
        # One reader for every text, whatever question is pending (bot/conversation/reading.py).
        self.reader = Reader(library.concepts, library.languages["en"],
                             combinations=library.combinations)
        self.red_flag_by_id = {rf.id: rf for rf in library.red_flags}
        self._index_findings()
        self.router = parsing.PhraseMatcher({f.id: f.triggers for f in library.flows.values()})
        # Triggers that count only inside the flow's context window (e.g. "shivery" goes to the
        # CRS checklist too when the patient had CAR T-cells in the last 30 days).
        self.window_router = parsing.PhraseMatcher(
            {f.id: f.window_triggers for f in library.flows.values() if f.window_triggers})
        self.rules: list[tuple[Flow, Rule]] = library.all_rules()  # every checklist's rules
        self.machine = self._build_machine()

    def _index_findings(self) -> None:
        """Which questions a finding answers, which checklists a concept leads to, and which
        sign each fact stands for (rule 8: one sign counts once)."""
        self.fillable: list[tuple[Flow, Question]] = []
        self.concept_flows: dict[str, list[str]] = {}
        self.fact_sign: dict[str, str] = {}
        for flow in self.lib.flows.values():
            for q in flow.questions:
                concepts = list(q.answered_by) + [c for o in q.options for c in o.concepts]
                if concepts or q.value or q.type == "temperature":
                    self.fillable.append((flow, q))
                for c in concepts:
                    self.concept_flows.setdefault(c, [])
                    if flow.id not in self.concept_flows[c]:
                        self.concept_flows[c].append(flow.id)
                for sf in q.sets:
                    for o in q.options:
                        if o.concepts and o.id in sf.when.any_of and len(sf.when.any_of) == 1:
                            self.fact_sign.setdefault(sf.fact, o.concepts[0])
                    if q.answered_by and sf.when.is_ == "yes":
                        self.fact_sign.setdefault(sf.fact, q.answered_by[0])

    def read(self, text: str) -> Reading:
        return self.reader.read(text[: self.max_body_chars])

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
        # News from another checklist decided the tier mid-question (rule 7): stop asking.
        machine.add_transition("finish", question_states, IDLE)
        # Rule 7: an URGENT finding reached before the checklist's EMERGENCY screen (a re-check
        # that starts at the reading) goes back to ask the screen, then gives the outcome.
        for flow in flows:
            screens = [q for q in flow.questions if q.screen]
            if screens:
                others = [state_of(flow, q) for q in flow.questions if q is not screens[0]]
                machine.add_transition("ask_screen", others, state_of(flow, screens[0]))
        machine.add_transition("opt_out", [*everywhere, OPTED_OUT], OPTED_OUT)
        machine.add_transition("opt_in", OPTED_OUT, IDLE)
        return machine

    def _decided(self, event: EventData) -> bool:
        """Rule 7: stop asking as soon as the answer is EMERGENCY, or URGENT once the
        checklist's EMERGENCY screen has been asked."""
        name = event.event.name
        flow_id = name[len("start_"):] if name.startswith("start_") else \
            event.state.name.split(":", 1)[0]
        return self.decided(event.model.session, flow_id)

    def decided(self, session: dict[str, Any], flow_id: str | None) -> bool:
        conv = session["conv"]
        tier = self.assess(conv, session)[0]
        if tier == "EMERGENCY":
            return True
        if tier != "URGENT":
            return False
        return self.screen_done(conv, flow_id)

    def screen_done(self, conv: dict[str, Any], flow_id: str | None) -> bool:
        flow = self.lib.flows.get(flow_id or "")
        if flow is None:
            return True
        return all(q.id in conv["answers"] for q in flow.questions if q.screen)

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
        soon_signs: set[str] = set()
        for flow, rule in self.rules:
            matched = rule.when.matched(facts)
            if not matched:
                continue
            # Rule 3: in a risk window a SOON fever or infection finding becomes URGENT; a risk
            # window never makes an EMERGENCY by itself.
            raised = rule.infection and risk and rule.tier == "SOON"
            tier = "URGENT" if raised else rule.tier
            reason = self._reason(rule, conv)
            if raised:
                reason += " (in a risk window: call now)"
            # Advice written for the rule's own tier ("re-check in 1 hour") would contradict a
            # raised tier, so it is dropped.
            findings.append(Finding(tier, reason, rule.cites, "" if raised else rule.advice,
                                    f"{flow.id}.{rule.id}"))
            if tier == "SOON":
                # Rule 8: one sign counts once (a headache in CRS and in neurotoxicity).
                for m in matched:
                    soon_signs.add("+".join(sorted(self.fact_sign.get(f, f)
                                                   for f in m.split("+"))))
        soon_count = len(soon_signs)
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
        for qid, text in (conv.get("partial_shown") or {}).items():
            shown.setdefault(qid, text)

        class _Missing(dict[str, str]):
            def __missing__(self, key: str) -> str:
                return "?"

        return rule.reason.format_map(_Missing(shown))

    # ------------------------------------------------------------------ messages
    def fill(self, text: str, who: str | None = None) -> str:
        """Numbers and the person the text is about: "you", "your son", "he"."""
        return text.format_map(_Forms(self.oncology_line, self.care_team, who))

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
        facts = conv.get("facts") or {}
        risk_from = (facts.get("risk_window") or {}).get("from", "")
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
            "episode_id": conv.get("episode_id") or conv.get("id", ""),
            "quotes": dict(conv.get("quotes") or {}),
            "texter": session.get("texter") or "patient",
            "risk_window_assumed": bool(risk_from) and not session.get("risk_window") and (
                risk_from != "patient_text"),
            "risk_window_reported": risk_from == "patient_text",
            "rules_version": self.rules_version,
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
                                                        question=self.ask(current[1],
                                                                          session.get("texter")))
        text = to_gsm7(" ".join(self.fill(text).split()))
        conv["follow_up_text"] = text
        session["last_seen"] = now
        return text, conv["id"]


class _Forms(dict[str, str]):
    """Placeholders of patient-facing text: the numbers to call, and the person it is about
    ({you}, {your}, {are_you}, {do_you}, {have_you}, {you_have}, {you_are}): "you" for the
    patient, "your son" or "he" once a caregiver is seen texting. Unknown names stay as typed."""

    def __init__(self, oncology_line: str, care_team: str, who: str | None):
        super().__init__(oncology_line=oncology_line, care_team=care_team)
        if not who:
            forms = ("you", "your", "are you", "do you", "have you", "you have", "you are")
        elif who in ("he", "she"):
            his = {"he": "his", "she": "her"}[who]
            forms = (who, his, f"is {who}", f"does {who}", f"has {who}", f"{who} has",
                     f"{who} is")
        else:
            p = f"your {who}"
            forms = (p, f"{p}'s".replace("'", ""), f"is {p}", f"does {p}", f"has {p}",
                     f"{p} has", f"{p} is")
        names = ("you", "your", "are_you", "do_you", "have_you", "you_have", "you_are")
        self.update(zip(names, forms, strict=True))
        self.update({k.capitalize(): v[:1].upper() + v[1:] for k, v in zip(names, forms,
                                                                           strict=True)})

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


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
        prev = self.s.get("conv") or {}
        conv_id = uuid.uuid4().hex[:12]
        # The texts that follow a red flag within the hour (the checklist the patient goes on
        # with, more news) are the same episode for the care team: one dashboard row.
        follows_red_flag = prev.get("red_flag_at") and self.now - prev["red_flag_at"] < 3600
        episode = (prev.get("episode_id") or prev.get("id")) if follows_red_flag else None
        conv = {
            "id": conv_id, "episode_id": episode or conv_id,
            "started_at": self.now, "flows": [], "queue": [],
            "answers": {}, "facts": {f"prior_{k}": v for k, v in prior.items()}, "retries": {},
            "red_flags": [], "recorded": False, "signs": [], "values": {}, "quotes": {},
            "text_ctx": [],
        }
        self.s["conv"] = conv
        self.sync_context()
        return conv

    def ctx_facts(self) -> list[str]:
        facts = list((self.s.get("ctx") or {}).get("facts") or ["ctx_unregistered"])
        conv = self.s.get("conv") or {}
        return facts + [f for f in conv.get("text_ctx", []) if f not in facts]

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
        reading = self.e.read(text)
        flags = reading.current("red_flag")

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
            self.absorb(reading)
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

        conv = self.s.get("conv")
        if state == IDLE and (norm in ACK_WORDS or norm in AFTER_OUTCOME_WORDS) and conv and \
                conv.get("done") and not (
                conv.get("context_pending") or conv.get("context_due")):
            tier = conv.get("tier") or "ROUTINE"
            return self.result(self.fill(self.m["closing"].format(
                reminder=self.m["tier_short"][tier])))
        if state == NEW:
            return self.result(self.first_contact(text, norm, reading))
        if state == IDLE and self.context_pending():
            return self.result(self.context_answer(text, norm))
        if state == IDLE and self.context_due(text, norm):
            return self.result(self.m["context_question"])
        if state == IDLE:
            return self.result(self.from_idle(text, norm, reading))
        return self.result(self.answer(text, norm, reading))

    def pending_prompt(self) -> str:
        cur = self.current_question()
        if cur:
            return self.ask(cur[1])
        return self.menu_text()

    # -- red flags
    def red_flag_record(self, flags: list[Any], silent: bool = False) -> str:
        conv = self.conv()
        for flag in flags:
            rf = self.e.red_flag_by_id[flag.concept]
            if not any(f["id"] == rf.id for f in conv["red_flags"]):
                conv["red_flags"].append({"id": rf.id,
                                          "reason": f"{rf.reason} ('{to_gsm7(flag.words)}')",
                                          "cites": rf.cites, "advice": rf.advice})
        self.s["emergency_at"] = self.now
        conv["red_flag_at"] = self.now
        rec = self.e.record(self.s, kind="red_flag_opted_out" if silent else "red_flag",
                            phone=self.phone, now=self.now)
        conv["tier"] = "EMERGENCY"
        self.records.append(rec)
        conv["done"] = True
        return self.e.red_flag_by_id[flags[0].concept].advice

    def red_flag(self, flags: list[Any]) -> str:
        advice = list(dict.fromkeys(self.e.red_flag_by_id[f.concept].advice for f in flags))
        self.red_flag_record(flags)
        self.e._fire(self.s, "red_flag")
        return self.e.compose(self.fill(self.m["red_flag"]), *(Opt(self.fill(a)) for a in advice),
                              Opt(self.fill(self.m["red_flag_after"])))

    # -- what the text says, wherever the conversation is
    def fill(self, text: str) -> str:
        return self.e.fill(text, self.s.get("texter"))

    def ask(self, q: Question) -> str:
        conv = self.s.get("conv") or {}
        known = (conv.get("partial") or {}).get(q.id)
        if known and q.type == "multi_choice":
            rest = [f"{i + 1} {o.label}" for i, o in enumerate(q.options) if o.id not in known]
            return self.fill(self.m["multi_rest"].format(
                known=conv["partial_shown"][q.id], items=", ".join(rest)))
        return self.fill(q.ask)

    def reask(self, q: Question) -> str:
        return self.fill(self.m["reask"].format(question=q.ask, example=q.example))

    def absorb(self, reading: Reading) -> bool:
        """Everything the text says, into the conversation: who is texting, treatment context,
        the signs and values it names, and the answers of every checklist they fill (a question
        whose answer is known is not asked). True when something new was learned."""
        conv = self.conv()
        if reading.caregiver and (not self.s.get("texter") or self.s["texter"] in ("he", "she")):
            self.s["texter"] = reading.caregiver
        learned = self.absorb_context(reading, conv)
        said = reading.concepts() | {f.concept for f in reading.findings if f.kind == "context"
                                     and not (f.negated or f.hypothetical)}
        new = [c for c in sorted(said) if c not in conv["signs"]]
        for c in new:
            conv["signs"].append(c)
            conv["facts"][f"saw_{c}"] = {"at": self.now, "from": "patient_text"}
        for f in reading.current():
            conv["quotes"].setdefault(f.concept, to_gsm7(f.words)[:120])
        for name, value in reading.values.items():
            if conv["values"].get(name) != value:
                conv["values"][name] = value
                conv["quotes"].setdefault(name, to_gsm7(reading.value_words.get(name, ""))[:120])
                learned = True
        filled = self.fill_answers()
        return bool(learned or new or filled)

    def absorb_context(self, reading: Reading, conv: dict[str, Any]) -> bool:
        """Treatment facts from the patient's words (CAR-T 5 days ago, chemo last week,
        neutrophils 0.3) as context facts of this conversation, like the profile's."""
        v = reading.values
        add: list[str] = []
        risk = False
        said = {f.concept for f in reading.findings if f.kind == "context"
                and not (f.negated or f.hypothetical)}
        if "car_t" in said:
            days = v.get("car_t_days")
            if days is None or days <= CAR_T_CRS_DAYS:
                add.append("ctx_car_t_window")
                risk = True
            if days is None or days <= CAR_T_ICANS_DAYS:
                add.append("ctx_car_t_neuro_window")
        if "blinatumomab" in said:
            add += ["ctx_blinatumomab", "ctx_blinatumomab_early"]
            risk = True
        if "on_chemo" in said:
            days = v.get("chemo_days")
            risk = risk or days is None or days <= CHEMO_WINDOW_DAYS
        if "neutropenic" in said or v.get("neutrophils", 9.0) < 0.5:
            risk = True
        if "low_platelets" in said or v.get("platelets", 999.0) < 50:
            add.append("ctx_platelets_lt50")
        if v.get("platelets", 999.0) < 20:
            add.append("ctx_platelets_lt20")
        new = [f for f in add if f not in conv["text_ctx"]]
        conv["text_ctx"] += new
        for f in new:
            conv["facts"][f] = {"at": self.now, "from": "patient_text"}
        if risk and "risk_window" not in conv["facts"]:
            conv["facts"]["risk_window"] = {"at": self.now, "from": "patient_text"}
            new.append("risk_window")
        return bool(new)

    def fill_answers(self) -> list[str]:
        """Answers that the signs and values seen so far give, in any checklist. A checklist's
        EMERGENCY screen is filled only inside that checklist (its YES assumes the checklist's
        own context: "very drowsy" is an emergency sign with a fever)."""
        conv = self.s["conv"]
        signs = set(conv["signs"])
        values = conv["values"]
        in_conv = set(conv["flows"]) | set(conv["queue"])
        filled = []
        for flow, q in self.e.fillable:
            if q.id in conv["answers"] or (q.screen and flow.id not in in_conv) or (
                    q.only_if is not None and not q.only_if.holds(conv["facts"])):
                continue
            value: Any = None
            words: list[str] = []
            if q.type == "yes_no" and signs & set(q.answered_by):
                value = "yes"
                words = [f"{c.replace('_', ' ')} ('{conv['quotes'].get(c, c)}')"
                         for c in q.answered_by if c in signs]
            elif q.type == "temperature" and "temperature" in values:
                c = values["temperature"]
                value = parsing.parse_temperature(conv["quotes"].get("temperature", "")) or \
                    parsing.Temperature(c, round(c * 9 / 5 + 32, 1), f"{c:g} C")
                words = [conv["quotes"].get("temperature", "")]
            elif q.type == "temperature" and "no_thermometer" in signs:
                value = "none"
                words = [conv["quotes"].get("no_thermometer", "")]
            elif q.type == "number" and q.value in values:
                n = values[q.value]
                if (q.minimum is None or n >= q.minimum) and (q.maximum is None or n <= q.maximum):
                    value = n
                    words = [conv["quotes"].get(q.value, "")]
            elif q.type == "yes_no" and signs & set(q.answered_no_by):
                value = "no"
                words = [conv["quotes"].get(c, c) for c in q.answered_no_by if c in signs]
            elif q.type == "multi_choice":
                if self.known_options(q, signs):
                    filled.append(q.id)
                continue
            elif q.type == "choice":
                picked = [o.id for o in q.options if signs & set(o.concepts)]
                if picked:
                    value = picked[-1]
                    words = [conv["quotes"].get(c, c) for o in q.options
                             for c in o.concepts if c in signs]
            if value is not None:
                said = "; ".join(w for w in dict.fromkeys(words) if w)
                self.store(q, value, said, shown=f"{value}: {said}" if said and isinstance(
                    value, str) and value in ("yes", "no") else None)
                conv["answers"][q.id]["from_text"] = True
                filled.append(q.id)
        for flow in self.e.lib.flows.values():
            for sc in flow.scores:
                if sc.value and sc.value in values and sc.id not in conv["answers"]:
                    self.score_from_value(flow, sc, values)
                    filled.append(sc.id)
        return filled

    def known_options(self, q: Question, signs: set[str]) -> bool:
        """Options of an any-of-these question that the patient already named: their facts
        count at once, and the question, if asked, lists only the others (rule 8)."""
        conv = self.s["conv"]
        partial = conv.setdefault("partial", {})
        known = partial.get(q.id, [])
        new = [o.id for o in q.options if signs & set(o.concepts) and o.id not in known]
        if not new:
            return False
        partial[q.id] = known + new
        for rule in q.sets:
            if rule.when.holds(partial[q.id]):
                conv["facts"][rule.fact] = {"at": self.now, "from": q.id}
        labels = {o.id: o.label for o in q.options}
        conv.setdefault("partial_shown", {})[q.id] = ", ".join(labels[i] for i in partial[q.id])
        if len(partial[q.id]) == len(q.options):
            self.store(q, partial[q.id], "(all named in the patient's words)")
        return True

    def score_from_value(self, flow: Flow, sc: Any, values: dict[str, float]) -> None:
        """A score the caregiver reports as a total ("ICE 7, usually 10") stands for its
        questions, which are then not asked."""
        conv = self.s["conv"]
        got = values[sc.value]
        usual = self.usual_score(sc)
        shown = f"{got:g} of {sc.max:g} (reported; usual {usual[1]})"
        conv["answers"][sc.id] = {"text": shown, "value": got, "shown": shown, "from_text": True}
        for qid in sc.questions:
            conv["answers"].setdefault(qid, {"text": "(total reported)", "value": None,
                                             "shown": "in the reported total"})
        if got < usual[0]:
            conv["facts"][sc.below_usual] = {"at": self.now, "from": sc.id}

    def usual_score(self, sc: Any) -> tuple[float, str]:
        conv = self.s.get("conv") or {}
        said = (conv.get("values") or {}).get(sc.usual_value or "")
        if said is not None:
            return float(said), f"{said:g}, as you told us"
        raw = (self.s.get("ctx") or {}).get("usual", {}).get(sc.usual_field)
        if raw is not None:
            return float(raw), f"{float(raw):g}"
        return sc.usual_default, f"{sc.usual_default:g}, not known"

    # -- routing
    def first_contact(self, text: str, norm: str, reading: Reading) -> str:
        self.absorb(reading)
        started = self.route(text, norm, reading, greeting=True)
        if started:
            return started
        self.e._fire(self.s, "reset")
        if self.free_text(reading):
            return self.unrecognised(text, greeting=True)
        return self.e.compose(self.m["greeting"], self.menu_text())

    def from_idle(self, text: str, norm: str, reading: Reading) -> str:
        conv = self.s.get("conv")
        asked_else = bool(conv and conv.get("awaiting_free_text") and not conv.get("done"))
        last_tier = conv.get("tier") if conv and conv.get("done") else None
        if reading.findings or reading.values or not last_tier:
            self.absorb(reading)  # a new conversation only for a text that says something
        started = self.route(text, norm, reading)
        if started:
            return started
        if asked_else or self.free_text(reading):
            return self.unrecognised(text)
        if last_tier:  # "idk", "?" after an outcome: what to do, again, never the menu alone
            return self.e.compose(self.fill(self.m["closing"].format(
                reminder=self.m["tier_short"][last_tier])), Opt(self.fill(
                    self.m["after_outcome"])))
        return self.e.compose(self.m["not_understood_menu"], self.menu_text())

    def free_text(self, reading: Reading) -> bool:
        """Words that say something about the patient, not a greeting or a menu word."""
        chat = set(self.m.get("chit_chat") or [])
        words = [t for t in reading.tokens if t.isalpha() and t not in chat]
        return len(words) >= 3

    def unrecognised(self, text: str, greeting: bool = False) -> str:
        """Nothing we know, in the patient's own words: never dropped. The patient is asked
        to call the care team today and the record is flagged for a nurse to read."""
        conv = self.conv()
        conv["awaiting_free_text"] = False
        conv["answers"]["own_words"] = {"text": to_gsm7(text.strip())[:300], "value": None,
                                        "shown": to_gsm7(text.strip())[:300]}
        findings = [Finding("SOON", "the patient's own words need a nurse to read them: '"
                            + to_gsm7(text.strip())[:200] + "'",
                            "clinical-rules.md > How answers combine > rule 1")]
        tier, known = self.e.assess(conv, self.s)
        if TIER_RANK[tier] > TIER_RANK["SOON"]:
            return self.after_move()
        rec = self.e.record(self.s, kind="unrecognised", phone=self.phone, now=self.now,
                            tier="SOON", findings=findings + known)
        rec["needs_reading"] = True
        self.records.append(rec)
        conv["done"] = True
        self.e._fire(self.s, "reset")
        parts: list[str | Opt] = [self.fill(self.m["tier"]["SOON"]),
                                  Opt(self.fill(self.m["unrecognised"]))]
        if greeting:
            parts.append(Opt(self.m["greeting_short"]))
        return self.e.compose(*parts)

    def pick_from_menu(self, norm: str) -> str | None:
        toks = norm.split()
        menu = self.menu()
        if len(toks) == 1 and toks[0].isdigit():
            i = int(toks[0]) - 1
            if 0 <= i < len(menu):
                return menu[i]
            if i == len(menu):
                return SOMETHING_ELSE
        if norm in {"something else", "other", "else", "something different"}:
            return SOMETHING_ELSE
        for fid in menu:
            flow = self.e.lib.flows[fid]
            if norm in {fid, " ".join(parsing.words(flow.title)),
                        " ".join(parsing.words(flow.menu_label))}:
                return fid
        return None

    def route(self, text: str, norm: str, reading: Reading, greeting: bool = False
              ) -> str | None:
        picked = self.pick_from_menu(norm)
        if picked == SOMETHING_ELSE:
            conv = self.conv()
            conv["awaiting_free_text"] = True
            return self.fill(self.m["something_else_ask"])
        flow_ids = [picked] if picked else self.flows_named_in(text)
        if not picked:
            flow_ids += [f for f in self.flows_for(reading) if f not in flow_ids]
        if not flow_ids:
            flow_ids = self.flows_answered_by(text)
        if not flow_ids:
            return None
        conv = self.conv()
        conv["queue"] = flow_ids[1:]
        if greeting:  # first contact: the not-for-emergencies line goes with the same reply
            self.intro = self.m["greeting_short"]
        return self.start_flow(flow_ids[0], text if not picked else "")

    def flows_for(self, reading: Reading) -> list[str]:
        """Checklists the text's signs belong to: for each sign, the first of its checklists in
        this patient's menu order (a context sign, like CAR-T, leads nowhere by itself)."""
        first = self.e.offered_first(self.ctx_facts())
        general = [fid for fid in self.e.lib.menu if self.e.lib.flows[fid].offer_first_when is None]
        # A checklist for a treatment window the patient is not known to be in (CRS, ICANS)
        # is reached by its own words or the menu, not by a sign another checklist asks about.
        menu = first + [f for f in general if f not in first]
        out: list[str] = []
        signs = reading.current("sign")
        # A sign every checklist asks about ("unwell") leads only when nothing else does.
        specific = [f for f in signs if len(self.e.concept_flows.get(f.concept, [])) < 4]
        for f in specific or signs:
            flows = [fid for fid in menu if fid in self.e.concept_flows.get(f.concept, [])]
            if flows and flows[0] not in out:
                out.append(flows[0])
        if not out and ("temperature" in reading.values or "spo2" in reading.values
                        or "systolic_bp" in reading.values):
            out = self.flows_answered_by(reading.text) or [self.menu()[0]]
        return out

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
        self.fill_answers()  # the checklist's screen may be answered by what was said already
        self.e._fire(self.s, f"start_{flow_id}")
        return self.after_move()

    def prefill(self, flow: Flow, text: str) -> None:
        """A bare reading ("38.9") as the first text fills the reading question."""
        reading = self.e.read(text)
        if reading.bare_number is None:
            return
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
            norm = " ".join(parsing.words(text))
            no_reading = parsing.says_no_thermometer(text) or norm in NONE_WORDS
            return "none" if no_reading else None
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
                usual, usual_shown = self.usual_score(sc)
                done = answered == len(sc.questions)
                shown = (f"{got:g} of {sc.max:g}" if done else
                         f"{got:g} of {sc.max:g} so far, {lost:g} lost")
                shown += f" (usual {usual_shown})"
                conv["answers"][sc.id] = {"text": shown, "value": got, "shown": shown}
                if sc.max - lost < usual:
                    conv["facts"][sc.below_usual] = {"at": self.now, "from": sc.id}

    def answer(self, text: str, norm: str, reading: Reading) -> str:
        cur = self.current_question()
        assert cur is not None
        flow, q = cur
        conv = self.conv()
        learned = self.absorb(reading)
        if q.id in conv["answers"]:  # the text answered the pending question by meaning
            self.advance(flow)
            return self.after_move()
        value = self.parse(q, text)
        known = (conv.get("partial") or {}).get(q.id)
        if known and isinstance(value, list):
            value = known + [v for v in value if v not in known]
        lead = ""
        if value is None and learned:
            # News given mid-checklist is taken where it is given; if it decides the tier
            # (rule 7) the checklist ends, else the pending question is asked again.
            if self.e.decided(self.s, flow.id):
                self.e._fire(self.s, "finish")
                return self.after_move()
            return self.e.compose(Opt(self.fill(self.m["noted"])), self.ask(q))
        if value is None and (norm in ACK_WORDS or reading.question):
            acks = conv.setdefault("acks", {})
            acks[q.id] = acks.get(q.id, 0) + 1
            if acks[q.id] <= 2:
                note = self.m["ack_reask"] if norm in ACK_WORDS else self.m["question_reask"]
                return self.e.compose(Opt(self.fill(note)), self.ask(q),
                                      Opt(self.fill(self.m["example"].format(
                                          example=q.example))))
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
                    return self.e.compose(Opt(note), self.reask(q))
                lead = note
            if tries < 2:
                if q.type == "multi_choice" and parsing.parse_yes_no(text):
                    # "yes" to "any of these?": ask which, not "we did not understand"
                    return self.fill(self.m["reask_which"].format(question=q.ask,
                                                                  example=q.example))
                return self.reask(q)
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
        self.advance(flow)
        return self.after_move(lead)

    def advance(self, flow: Flow) -> None:
        """Next question; but an URGENT tier with the screen not yet asked asks it first."""
        conv = self.s["conv"]
        tier = self.e.assess(conv, self.s)[0]
        if tier == "URGENT" and not self.e.screen_done(conv, flow.id):
            self.e._fire(self.s, "ask_screen")
        else:
            self.e._fire(self.s, "advance")

    def after_move(self, lead: str = "") -> str:
        """Reply after the machine moved: the next question, or the outcome."""
        cur = self.current_question()
        if cur is not None:
            return self.e.compose(self.intro, Opt(lead), self.ask(cur[1]))
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
        conv["tier"] = tier
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
        # The tier's words come first (EMERGENCY: "Call 911 now." before anything else, also
        # before the first-contact line), then why, in a few words.
        parts: list[str | Opt] = [self.fill(self.m["tier"][tier])]
        if tier == "EMERGENCY":
            parts.append(Opt(self.intro))
        else:
            parts.insert(0, self.intro)
        if lead:  # "to be safe we took the more serious answer" comes before the details
            parts.append(Opt(lead))
            lead = ""
        why = next((f.reason for f in findings if f.tier == tier), "")
        if why and tier != "ROUTINE":
            parts.append(Opt(self.fill(self.m["why"].format(reason=_short(why)))))
        if "no_reading" in conv["facts"]:
            parts.append(Opt(self.fill(self.m["get_thermometer"])))
        question = self.context_question_due(conv, tier)
        if question:  # before advice: it may raise the tier (rule 3)
            parts += [Opt(lead), Opt(question)]
            lead = ""
        parts += [Opt(self.fill(a)) for a in advice]
        if tier in ("ROUTINE", "SOON"):
            parts.append(Opt(self.fill(self_care)))
        parts += [Opt(lead)]
        if not question:
            parts.append(Opt(self.fill(self.m.get("after_outcome", ""))))
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
            return self.route(text, norm, self.e.read(text)) or self.menu_text()
        conv["answers"]["risk_window_context"] = {
            "text": to_gsm7(text.strip())[:300], "value": "no" if yes is False else "yes",
            "shown": {True: "yes", False: "no"}.get(yes, "unclear, taken as yes")}
        if yes is False:
            return self.e.compose(self.m["context_thanks"], Opt(self.m.get("after_outcome", "")))
        conv["facts"]["risk_window"] = {"at": self.now, "from": "risk_window_context"}
        return self.outcome()


def _short(reason: str, limit: int = 90) -> str:
    """The first words of a reason, for the patient ("Why: temperature 38.6 C >= 38.0")."""
    reason = reason.split(" (")[0] if len(reason) > limit else reason
    return reason if len(reason) <= limit else reason[: limit - 3].rsplit(" ", 1)[0] + "..."
