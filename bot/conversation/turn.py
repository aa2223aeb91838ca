"""One inbound message, from the text to the reply.

A ``Turn`` is the lifecycle machine's model for the length of one message (``lifecycle.py``):
it reads the text once (``Engine.read``), lets ``Answers`` put what it says into the
conversation, routes it (red flag, STOP, menu, a checklist, the pending question), moves the
lifecycle, and composes the reply from ``flows/messages.yaml``.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from ..sms import to_gsm7
from . import lifecycle, parsing
from .answers import Answers
from .assess import Finding
from .flows import TIER_RANK, Flow, Question
from .reading import Reading
from .replies import Opt, short
from .session import Answer, Conversation, Fact, Prior, RedFlagNote, Session

if TYPE_CHECKING:
    from .engine import Engine, Result

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
# A question that names these asks whether to get urgent care: never answered "no need to call".
URGENT_CARE_WORDS = {"er", "hospital", "911", "999", "ambulance", "emergency", "urgent",
                     "urgently", "worry", "worried", "serious", "dangerous", "doctor", "gp"}
# The texts that follow a red flag, or an URGENT or EMERGENCY outcome, within this many seconds
# are the same episode for the care team (one dashboard row, one open escalation).
EPISODE_AFTER_RED_FLAG_SECONDS = 3600
# The fact a conversation starts with inside the hour after an URGENT outcome (start_conv)
EPISODE_FACT = "episode_urgent"


class Turn:
    """One inbound message. Also the lifecycle machine's model: ``is_asking()`` and friends,
    and the triggers ``ask``, ``recheck``, ``conclude``, ``greet``, ``to_menu``, ``opt_out``,
    ``opt_in`` are added while the message is handled (``fire`` calls them by name)."""

    # The machine's slot while the message is handled (lifecycle.Attached).
    lifecycle: Any = None

    def is_new(self) -> bool:
        return bool(self.lifecycle.is_new())

    def is_menu(self) -> bool:
        return bool(self.lifecycle.is_menu())

    def is_asking(self) -> bool:
        return bool(self.lifecycle.is_asking())

    def is_follow_up(self) -> bool:
        return bool(self.lifecycle.is_follow_up())

    def is_outcome(self) -> bool:
        return bool(self.lifecycle.is_outcome())

    def is_opted_out(self) -> bool:
        return bool(self.lifecycle.is_opted_out())

    def __init__(self, engine: Engine, session: Session, phone: str, now: float):
        self.e = engine
        self.session = session
        self.s = session
        self.phone = phone
        self.now = now
        self.records: list[dict[str, Any]] = []
        self.m = engine.msg
        self.answers = Answers(engine, session, now)
        self.intro = ""  # a mandatory first part of this turn's reply (first-contact line)
        self.cut = False  # the text was longer than MAX_BODY_CHARS and only its start was read

    # -- helpers
    def result(self, reply: str | None) -> Result:
        from .engine import Result

        self.s.last_seen = self.now
        if reply is not None and self.cut:
            reply = self.e.compose(reply, Opt(self.m["too_long"].format(
                chars=self.e.max_body_chars)))
        if reply is not None:
            reply = to_gsm7(reply)
        return Result(reply, self.s.to_dict(), self.records,
                      in_checklist=self.current_question() is not None)

    def start_conv(self) -> Conversation:
        prior = {k: p for k, p in self.s.prior.items() if self.now - p.at <= p.hours * 3600}
        self.s.prior = prior
        prev = self.s.conv
        conv_id = uuid.uuid4().hex[:12]
        # ... and after an URGENT or EMERGENCY outcome, so that a worse answer minutes later
        # raises the same open escalation (bot/paging.py) instead of paging a second one.
        since = self.episode_since(prev)
        episode = (prev.episode_id or prev.id) if prev is not None and since else None
        conv = Conversation(id=conv_id, episode_id=episode or conv_id, started_at=self.now,
                            facts={f"prior_{k}": Fact(p.at, "prior") for k, p in prior.items()})
        if prev is not None and since:
            conv.episode_signs = list(dict.fromkeys([*prev.episode_signs, *prev.signs]))
            conv.episode_values = {**prev.episode_values, **prev.values}
            conv.episode_flows = list(dict.fromkeys([*prev.episode_flows, *prev.flows]))
        if prev is not None and since and prev.tier == "URGENT":
            # the rules see it (other.yaml episode_urgent): a later checklist of the episode is
            # URGENT at least, and rule 7 stops its questions at once (after EMERGENCY, the
            # outcome's emergency hold keeps every outcome EMERGENCY)
            conv.facts[EPISODE_FACT] = Fact(since, "episode")
        self.s.conv = conv
        self.sync_context()
        return conv

    def ctx_facts(self) -> list[str]:
        facts = list(self.s.ctx.facts or ["ctx_unregistered"])
        conv = self.s.conv
        return facts + [f for f in (conv.text_ctx if conv else []) if f not in facts]

    def sync_context(self) -> None:
        """The patient's context (context.py) as ``ctx_*`` facts of the conversation,
        refreshed every message so a profile edited mid-checklist counts at once."""
        conv = self.s.conv
        if conv is None:
            return
        for name in [n for n in conv.facts if n.startswith("ctx_")]:
            del conv.facts[name]
        for name in self.ctx_facts():
            conv.facts[name] = Fact(self.now, "profile")

    def menu(self) -> list[str]:
        return self.e.menu_for(self.ctx_facts())

    def menu_text(self) -> str:
        return self.e.menu_text(self.menu())

    def conv(self) -> Conversation:
        conv = self.s.conv
        if conv is None or conv.done:
            conv = self.start_conv()
        return conv

    def in_progress(self) -> bool:
        return self.current_question() is not None

    def current_question(self) -> tuple[Flow, Question] | None:
        if self.s.state not in (lifecycle.ASKING, lifecycle.FOLLOW_UP):
            return None
        return self.e.question_at(self.s.at)

    def abandon_if_in_progress(self, why: str) -> None:
        conv = self.s.conv
        if self.in_progress() and conv and conv.answers and not conv.done:
            rec = self.e.record(self.s, kind="abandoned", phone=self.phone, now=self.now)
            rec["reasons"] = [*rec["reasons"], f"checklist left unfinished ({why})"]
            self.records.append(rec)
            conv.done = True

    def assess(self, conv: Conversation | None = None) -> tuple[str, list[Finding]]:
        return self.e.assessor.assess(conv or self.s.conv, self.s.risk_window)

    # -- the turn
    def run(self, text: str, norm: str, num_media: int) -> Result:
        with lifecycle.Attached(self.e.machine, self) as self.lifecycle:
            return self.result(self.reply_to(text, norm, num_media))

    def reply_to(self, text: str, norm: str, num_media: int) -> str | None:
        self.sync_context()
        reading = self.e.read(text)
        flags = reading.current("red_flag")

        if self.is_opted_out():
            if norm in START_WORDS or norm == "yes":
                self.fire("opt_in")
                return self.e.compose(self.m["started"], Opt(self.menu_text()))
            if flags:
                # Carriers block texts to an opted-out number, but the care team must hear of it.
                self.red_flag_record(flags, silent=True)
            return None

        if norm in STOP_WORDS:
            self.fire("opt_out", why="patient opted out")
            return self.m["stopped"]

        if flags:
            self.absorb(reading)
            return self.red_flag(flags)

        if norm in HELP_WORDS:
            return self.e.compose(self.m["help"], self.pending_prompt())

        if norm in MENU_WORDS:
            self.fire("to_menu", why="patient asked for the menu", forget=True)
            return self.e.compose(self.m["restart"], self.menu_text())

        if norm in START_WORDS:
            return self.e.compose(self.m["already_opted_out"], self.pending_prompt())

        if not norm:
            notice = self.m["photo"] if num_media else self.m["empty"]
            if self.is_new():
                return self.e.compose(self.m["greeting"], notice, self.menu_text())
            return self.e.compose(notice, self.pending_prompt())

        conv = self.s.conv
        if self.is_outcome() and (norm in ACK_WORDS or norm in AFTER_OUTCOME_WORDS) and conv \
                and conv.done and not (conv.context_pending or conv.context_due):
            tier = conv.tier or "ROUTINE"
            return self.fill(self.m["closing"].format(reminder=self.m["tier_short"][tier]))
        if self.is_new():
            return self.first_contact(text, norm, reading)
        if self.is_outcome() and self.context_pending():
            return self.context_answer(text, norm)
        if self.is_outcome() and self.context_due(text, norm):
            return self.m["context_question"]
        if self.is_menu() or self.is_outcome():
            return self.from_idle(text, norm, reading)
        if self.current_question() is None:  # a question the flow files no longer have
            self.fire("to_menu")
            return self.from_idle(text, norm, reading)
        return self.answer(text, norm, reading)

    def fire(self, trigger: str, **kwargs: Any) -> None:
        """Move the lifecycle (``lifecycle.build`` lists the triggers and their callbacks),
        through the machine's own ``trigger`` (a trigger may share a name with a method here:
        ``ask`` the question vs the ``ask`` transition)."""
        if not self.lifecycle.trigger(trigger, **kwargs):
            raise RuntimeError(f"lifecycle: {trigger} not allowed from {self.s.state}")

    def pending_prompt(self) -> str:
        cur = self.current_question()
        if cur:
            return self.question_text(cur[1])
        return self.menu_text()

    # -- red flags
    def red_flag_record(self, flags: list[Any], silent: bool = False) -> str:
        conv = self.conv()
        for flag in flags:
            rf = self.e.red_flag_by_id[flag.concept]
            if not any(f.id == rf.id for f in conv.red_flags):
                conv.red_flags.append(RedFlagNote(rf.id, f"{rf.reason} ('{to_gsm7(flag.words)}')",
                                                  rf.cites, rf.advice))
        self.s.emergency_at = self.now
        conv.red_flag_at = self.now
        rec = self.e.record(self.s, kind="red_flag_opted_out" if silent else "red_flag",
                            phone=self.phone, now=self.now)
        conv.tier = "EMERGENCY"
        self.records.append(rec)
        conv.done = True
        return self.e.red_flag_by_id[flags[0].concept].advice

    def red_flag(self, flags: list[Any]) -> str:
        advice = list(dict.fromkeys(self.e.red_flag_by_id[f.concept].advice for f in flags))
        self.red_flag_record(flags)
        self.fire("conclude")
        return self.e.compose(self.fill(self.m["red_flag"]), *(Opt(self.fill(a)) for a in advice),
                              Opt(self.fill(self.m["red_flag_after"])))

    # -- words
    def fill(self, text: str) -> str:
        return self.e.fill(text, self.s.texter or None)

    def question_text(self, q: Question) -> str:
        conv = self.s.conv
        known = conv.partial.get(q.id) if conv else None
        if known and conv and q.type == "multi_choice":
            rest = [f"{i + 1} {o.label}" for i, o in enumerate(q.options) if o.id not in known]
            return self.fill(self.m["multi_rest"].format(
                known=conv.partial_shown[q.id], items=", ".join(rest)))
        return self.fill(q.ask)

    def reask(self, q: Question) -> str:
        return self.fill(self.m["reask"].format(question=q.ask, example=q.example))

    def absorb(self, reading: Reading) -> bool:
        self.conv()
        return self.answers.absorb(reading)

    # -- routing
    def first_contact(self, text: str, norm: str, reading: Reading) -> str:
        self.absorb(reading)
        started = self.route(text, norm, reading, greeting=True)
        if started:
            return started
        self.fire("greet")
        if self.free_text(reading):
            return self.unrecognised(text, greeting=True, reading=reading)
        return self.e.compose(self.m["greeting"], self.menu_text())

    def from_idle(self, text: str, norm: str, reading: Reading) -> str:
        conv = self.s.conv
        asked_else = bool(conv and conv.awaiting_free_text and not conv.done)
        last_tier = conv.tier if conv and conv.done else None
        floor = self.episode_tier(conv)
        if reading.findings or reading.values or not last_tier:
            self.absorb(reading)  # a new conversation only for a text that says something
            across = self.answers.combine_across_texts()
            if across:  # news that makes a red flag with what the episode's texts said
                return self.red_flag(across)
            again = self.episode_screen(reading)
            if again:  # "also she is really floppy now" after the fever checklist's outcome
                return self.start_flow(again, text)
        started = self.route(text, norm, reading)
        if started:
            return started
        if asked_else or self.free_text(reading):
            return self.unrecognised(text, reading=reading, floor=floor)
        if last_tier:  # "idk", "?" after an outcome: what to do, again, never the menu alone
            return self.e.compose(self.fill(self.m["closing"].format(
                reminder=self.m["tier_short"][last_tier])), Opt(self.fill(
                    self.m["after_outcome"])))
        return self.e.compose(self.m["not_understood_menu"], self.menu_text())

    def episode_screen(self, reading: Reading) -> str | None:
        """A checklist of this episode whose EMERGENCY screen the text's signs answer yes
        ("ok. also she threw up twice and is really floppy now", after the fever checklist's
        URGENT outcome: very drowsy with that fever is its EMERGENCY row): that checklist
        again, its screen taken from the text, rather than a new checklist that does not ask
        it."""
        conv = self.s.conv
        if conv is None or not conv.episode_flows:
            return None
        said = {f.concept for f in reading.current("sign")}
        for fid in conv.episode_flows:
            flow = self.e.lib.flows.get(fid)
            if flow is not None and any(q.screen and said & set(q.answered_by)
                                        for q in flow.questions):
                return fid
        return None

    def free_text(self, reading: Reading) -> bool:
        """Words that say something about the patient, not a greeting or a menu word: three
        words or more, or a sign in fewer ("hes worse")."""
        chat = set(self.m.get("chit_chat") or [])
        words = [t for t in reading.tokens if t.isalpha() and t not in chat]
        return len(words) >= 3 or bool(reading.current("sign"))

    def episode_since(self, conv: Conversation | None) -> float | None:
        """When the red flag or the URGENT or EMERGENCY outcome of ``conv`` was given, if this
        text is within EPISODE_AFTER_RED_FLAG_SECONDS of it (the same episode), else None."""
        since = max((t for t in ((conv.red_flag_at, conv.escalated_at) if conv else ())
                     if t is not None), default=None)
        return since if since is not None and \
            self.now - since < EPISODE_AFTER_RED_FLAG_SECONDS else None

    def episode_tier(self, conv: Conversation | None) -> str | None:
        """The tier of an URGENT or EMERGENCY outcome this episode is still in (the texts
        within the hour of it join its open escalation), or None. Only the episode: "thanks,
        hes home now" the next day is not told to call 911 again, and pages nobody."""
        if conv is None or not conv.done or conv.tier not in ("URGENT", "EMERGENCY") or \
                self.episode_since(conv) is None:
            return None
        return conv.tier

    def unrecognised(self, text: str, greeting: bool = False,
                     reading: Reading | None = None, floor: str | None = None) -> str:
        """Nothing we know, in the patient's own words: never dropped. The patient is asked
        to call the care team today and the record is flagged for a nurse to read. A question
        from someone who says the patient is well, with no symptom in it ("can he use a normal
        toothbrush? hes fine"), is ROUTINE, and still read by a nurse."""
        conv = self.conv()
        conv.awaiting_free_text = False
        own = to_gsm7(text.strip())
        conv.answers["own_words"] = Answer(own[:300], None, own[:300])
        # the tier of the text's own words (the episode's floor is handled below)
        episode = conv.facts.pop(EPISODE_FACT, None)
        tier, known = self.assess(conv)
        if episode is not None:
            conv.facts[EPISODE_FACT] = episode
        if TIER_RANK[tier] > TIER_RANK["SOON"]:
            if greeting:  # first contact: the not-for-emergencies line goes with the reply
                self.intro = self.m["greeting_short"]
            return self.after_move()
        if floor is not None:
            # Words we cannot read, minutes after "call 911" or "call the line now" ("ok were
            # going in now", "only when I wipe"): never a lower instruction. The outcome is
            # said again, and the words go to the same episode's open escalation for a nurse.
            findings = [Finding(floor, f"the patient's own words after the {floor} outcome, "
                                f"for a nurse to read: '{own[:200]}'",
                                "clinical-rules.md > How answers combine > rule 1")]
            rec = self.e.record(self.s, kind="unrecognised", phone=self.phone, now=self.now,
                                tier=floor, findings=findings + known)
            rec["needs_reading"] = True
            self.records.append(rec)
            conv.tier = floor
            conv.escalated_at = self.now  # an URGENT or EMERGENCY outcome: the episode goes on
            self.fire("conclude")
            return self.e.compose(self.fill(self.m["closing"].format(
                reminder=self.m["tier_short"][floor])), Opt(self.fill(
                    self.m["after_outcome"])))
        question = reading is not None and tier == "ROUTINE" and self.well_question(reading)
        out = "ROUTINE" if question else "SOON"
        findings = [Finding(out, ("a question, the patient said to be well" if question else
                                  "the patient's own words need a nurse to read them")
                            + ": '" + own[:200] + "'",
                            "clinical-rules.md > How answers combine > rule 1")]
        rec = self.e.record(self.s, kind="question" if question else "unrecognised",
                            phone=self.phone, now=self.now, tier=out, findings=findings + known)
        rec["needs_reading"] = True
        self.records.append(rec)
        conv.tier = out
        self.fire("conclude")
        if question:
            return self.e.compose(self.fill(self.m["question_routine"]))
        parts: list[str | Opt] = [self.fill(self.m["tier"]["SOON"]),
                                  Opt(self.fill(self.m["unrecognised"]))]
        if greeting:
            parts.append(Opt(self.m["greeting_short"]))
        return self.e.compose(*parts)

    def well_question(self, reading: Reading) -> bool:
        """No symptom now, and the texter says the patient is well (or only denies signs)
        while asking something."""
        if "question_routine" not in self.m:
            return False
        current = reading.current()
        if any(f.kind in ("sign", "red_flag") for f in current):
            return False
        # Said well in any clause: a list's negation ("no fits no confusion, talking normal")
        # or a dream ("had a dream i couldnt speak, woke up fine") earlier in the sentence does
        # not reach it (its own denials, "not fine", are look-alikes in concepts.yaml).
        well = any((f.concept == "medicine_question" and not f.hypothetical) or
                   f.concept == "doing_well" for f in reading.findings)
        # A question with no symptom in it ("can he use his normal toothbrush?"), unless it
        # asks about urgent care ("should I take him to A&E?"): the nurse reads it either way.
        urgent_care = bool(set(reading.tokens) & URGENT_CARE_WORDS) or bool(
            re.search(r"\ba ?(?:&|and) ?e\b", reading.text.lower()))
        return well or (reading.question and not urgent_care)

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
            conv.awaiting_free_text = True
            if self.is_new():
                self.fire("greet")
            return self.fill(self.m["something_else_ask"])
        flow_ids = [picked] if picked else self.flows_named_in(text)
        if not picked:
            flow_ids += [f for f in self.flows_for(reading) if f not in flow_ids]
        if not flow_ids:
            flow_ids = self.flows_answered_by(text)
        if not flow_ids:
            return None
        conv = self.conv()
        conv.queue = flow_ids[1:]
        if greeting:  # first contact: the not-for-emergencies line goes with the same reply
            self.intro = self.m["greeting_short"]
        return self.start_flow(flow_ids[0], text if not picked else "")

    def flows_for(self, reading: Reading) -> list[str]:
        """Checklists the text's signs belong to: for each sign, the first of its checklists in
        this patient's menu order (a context sign, like CAR-T, leads nowhere by itself)."""
        first = self.e.offered_first(self.ctx_facts())
        general = [fid for fid in self.e.lib.menu if self.e.lib.flows[fid].offer_first_when is None
                   and fid not in first]
        # A checklist for a treatment window the patient is not known to be in (CRS, ICANS)
        # is reached by its own words or the menu, not by a sign a general checklist asks
        # about; but a sign that a general checklist has only in its EMERGENCY screen ("very
        # drowsy": an emergency with a fever) leads first to a checklist that asks it as a sign
        # of its own (unusual sleepiness, neurotoxicity), whatever the patient's window.
        window = [fid for fid in self.e.lib.menu if fid not in first and fid not in general]
        out: list[str] = []
        signs = reading.current("sign")
        # A sign every checklist asks about ("unwell") leads only when nothing else does.
        specific = [f for f in signs if len(self.e.concept_flows.get(f.concept, [])) < 4]
        for f in specific or signs:
            has = self.e.concept_flows.get(f.concept, [])

            def own(fid: str, c: str = f.concept) -> bool:
                return (c, fid) not in self.e.screen_only

            asked = [fid for fid in general if fid in has]
            # a window checklist whose signs lead anywhere (SVC: "his face is really puffy"),
            # only for a sign no general checklist asks
            anywhere = [fid for fid in window if not asked and fid in has and own(fid)
                        and self.e.lib.flows[fid].signs_lead_outside_window]
            flows = ([fid for fid in first if fid in has]
                     + [fid for fid in asked if own(fid)]
                     + [fid for fid in window if asked and fid in has and own(fid)]
                     + asked + anywhere)
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
                    value = self.answers.parse(q, text)
                    if value is not None and value != "none":
                        return [fid]
        return []

    def start_flow(self, flow_id: str, text: str) -> str:
        conv = self.conv()
        flow = self.e.lib.flows[flow_id]
        conv.flows.append(flow_id)
        # A rule may be scoped to its own checklist with the fact flow_<id> (set once the
        # checklist has started), so that a shared fact (fever) does not repeat a finding in
        # a conversation that never reached that checklist.
        conv.facts[f"flow_{flow_id}"] = Fact(self.now, "flow")
        if text:
            self.answers.prefill(flow, text)
        self.answers.fill_answers()  # the checklist's screen may be answered already
        return self.move_on(flow)

    def start_follow_up(self, flow: Flow, after_conversation: str) -> str | None:
        """The re-check after a SOON outcome (``Engine.follow_up``): a new conversation of the
        checklist, on its follow-up question. None if the checklist has nothing to ask."""
        with lifecycle.Attached(self.e.machine, self) as self.lifecycle:
            conv = self.start_conv()
            conv.follow_up_of = after_conversation
            self.start_flow(flow.id, "")
            current = self.current_question()
            if current is None:
                return None
            spec = (self.m.get("follow_up") or {}).get(flow.id) or {}
            question = next((q for q in flow.questions if q.id == spec.get("question")), None)
            if question is not None and spec.get("ask"):
                # Straight on to the re-check question (a question of the same checklist).
                self.fire("recheck", at=f"{flow.id}:{question.id}")
                text = spec["ask"]
            else:
                self.fire("recheck", at=self.s.at)
                text = self.m["follow_up_generic"].format(
                    title=flow.title.lower(), question=self.question_text(current[1]))
            text = to_gsm7(" ".join(self.fill(text).split()))
            conv.follow_up_text = text
            self.s.last_seen = self.now
            return text

    # -- answers
    def answer(self, text: str, norm: str, reading: Reading) -> str:
        cur = self.current_question()
        if cur is None:  # nothing pending after all: read it as a new text
            return self.from_idle(text, norm, reading)
        flow, q = cur
        conv = self.conv()
        learned = self.answers.absorb(reading)
        across = self.answers.combine_across_texts()
        if across:  # news that makes a red flag with what earlier texts said
            return self.red_flag(across)
        if q.id in conv.answers:  # the text answered the pending question by meaning
            return self.move_on(flow, after=q)
        value = self.answers.parse(q, text)
        known = conv.partial.get(q.id)
        if known and isinstance(value, list):
            value = known + [v for v in value if v not in known]
        lead = ""
        if value is None and learned:
            # News given mid-checklist is taken where it is given; if it decides the tier
            # (rule 7) the checklist ends, else the pending question is asked again.
            if self.e.assessor.decided(conv, self.s.risk_window, flow.id):
                return self.after_checklist()
            return self.e.compose(Opt(self.fill(self.m["noted"])), self.question_text(q))
        red_flag_ack = value is None and q.red_flag and (norm in ACK_WORDS or reading.question)
        if red_flag_ack and conv.retries.get(q.id, 0) == 0:
            # "ok" is never a yes, and a question back ("what do u mean") is no answer; to a
            # red-flag question each is an answer that cannot be understood (rule 4): asked
            # once more, then the worse answer is taken (below).
            conv.retries[q.id] = 1
            conv.acks[q.id] = conv.acks.get(q.id, 0) + 1
            note = self.m["ack_reask"] if norm in ACK_WORDS else self.m["question_reask"]
            return self.e.compose(Opt(self.fill(note)), self.question_text(q),
                                  Opt(self.fill(self.m["example"].format(example=q.example))))
        if value is None and not red_flag_ack and (norm in ACK_WORDS or reading.question):
            conv.acks[q.id] = conv.acks.get(q.id, 0) + 1
            if conv.acks[q.id] <= 2:
                note = self.m["ack_reask"] if norm in ACK_WORDS else self.m["question_reask"]
                return self.e.compose(Opt(self.fill(note)), self.question_text(q),
                                      Opt(self.fill(self.m["example"].format(
                                          example=q.example))))
        if value is None:
            tries = conv.retries.get(q.id, 0) + 1
            conv.retries[q.id] = tries
            other = [fid for fid, _ in self.e.router.find(text)
                     if fid not in conv.flows and fid not in conv.queue]
            if other:
                conv.queue.extend(other)
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
                self.store_worse(q, text)
                lead = " ".join(x for x in (lead, self.m["unsure_taken_worse"]) if x)
            else:
                self.answers.store_unclear(q, text)
        else:
            self.answers.store(q, value, text)
        return self.move_on(flow, after=q, lead=lead)

    def store_worse(self, q: Question, text: str) -> None:
        """Rule 4: a danger question still unclear after a second try takes the worse answer."""
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
        self.answers.store(q, worse_value, text, shown=f"unclear, taken as {worse_shown}")

    def move_on(self, flow: Flow, after: Question | None = None, lead: str = "") -> str:
        """The next question of the checklist; an URGENT tier with the checklist's EMERGENCY
        screen not yet asked asks the screen first (rule 7); else the checklist is over."""
        conv = self.conv() if self.s.conv is None else self.s.conv
        tier = self.assess(conv)[0]
        screens = [q for q in flow.questions if q.screen]
        if tier == "URGENT" and screens and not self.e.assessor.screen_done(conv, flow.id):
            nxt: Question | None = next(q for q in screens if q.id not in conv.answers)
        else:
            nxt = self.e.next_question(flow, conv, self.s.risk_window, after)
        if nxt is not None:
            self.fire("ask", at=f"{flow.id}:{nxt.id}")
            return self.e.compose(self.intro, Opt(lead), self.question_text(nxt))
        return self.after_checklist(lead)

    def after_checklist(self, lead: str = "") -> str:
        """The checklist is over: the next one the patient named (while the tier is below
        URGENT), or the outcome."""
        conv = self.conv() if self.s.conv is None else self.s.conv
        tier, findings = self.assess(conv)
        if tier == "URGENT":
            owed = self.screen_owed(conv, findings)
            if owed is not None:
                return owed
        if TIER_RANK[tier] < TIER_RANK["URGENT"]:
            ctx = self.ctx_facts()
            for fid in conv.flows[-1:]:
                for nxt in self.e.lib.flows[fid].continue_with:
                    cond = self.e.lib.flows[nxt].offer_first_when
                    if nxt not in conv.flows and nxt not in conv.queue and (
                            cond is None or cond.holds(ctx)):
                        conv.queue.append(nxt)
            while conv.queue:
                nxt = conv.queue.pop(0)
                if nxt in conv.flows:
                    continue
                note = self.m["next_checklist"].format(title=self.e.lib.flows[nxt].title)
                return self.e.compose(Opt(lead), Opt(note), self.start_flow(nxt, ""))
        return self.outcome(lead)

    def screen_owed(self, conv: Any, findings: list[Any]) -> str | None:
        """Rule 7's exception when the row that makes the outcome URGENT belongs to another
        checklist than the ones walked: before "call the 24-hour line", the EMERGENCY screen
        of a checklist whose row decided it has been asked ("a bit sleepy" on day 8 after
        CAR-T is a nervous-system row: ask about a seizure, or not waking, not only the CRS
        screen). One question: when none of those screens has been asked, the first one's,
        asked as it is (its checklist is not started: nothing fills it from earlier words).
        None when one has been asked."""
        deciding = [fid for fid in dict.fromkeys(
            f.rule.split(".", 1)[0] for f in findings if f.tier == "URGENT" and "." in f.rule
            and not self.episode_row(f.rule))
            if fid in self.e.lib.flows]
        with_screen = [fid for fid in deciding
                       if any(q.screen for q in self.e.lib.flows[fid].questions)]
        if not with_screen or any(self.e.assessor.screen_done(conv, fid) for fid in with_screen):
            return None
        flow = self.e.lib.flows[with_screen[0]]
        screen = next(q for q in flow.questions if q.screen and q.id not in conv.answers)
        # the screen's EMERGENCY rows may be scoped to their checklist (flow_<id>)
        conv.facts.setdefault(f"flow_{flow.id}", Fact(self.now, "flow"))
        self.fire("ask", at=f"{flow.id}:{screen.id}")
        return self.e.compose(self.intro, self.question_text(screen))

    def episode_row(self, rule_id: str) -> bool:
        """A row the episode's URGENT floor alone makes true (other.yaml episode_urgent): its
        URGENT was decided, after its screen, in an earlier conversation of the episode."""
        fid, _, rid = rule_id.partition(".")
        flow = self.e.lib.flows.get(fid)
        rule = next((r for r in flow.rules if r.id == rid), None) if flow else None
        return rule is not None and bool(rule.when.matched([EPISODE_FACT]))

    def after_move(self, lead: str = "") -> str:
        cur = self.current_question()
        if cur is not None:
            return self.e.compose(self.intro, Opt(lead), self.question_text(cur[1]))
        return self.after_checklist(lead)

    def outcome(self, lead: str = "") -> str:
        conv = self.conv() if self.s.conv is None else self.s.conv
        tier, findings = self.assess(conv)
        held = self.s.emergency_at and self.now - self.s.emergency_at < self.e.emergency_hold
        if held and tier != "EMERGENCY":
            tier = "EMERGENCY"
            findings.append(Finding("EMERGENCY", "an emergency sign was reported earlier; never "
                                    "downgraded", "clinical-rules.md > The four tiers > EMERGENCY"))
        if tier == "EMERGENCY":
            self.s.emergency_at = self.s.emergency_at or self.now
        if tier in ("URGENT", "EMERGENCY"):
            conv.escalated_at = self.now
        conv.tier = tier
        self.records.append(self.e.record(self.s, kind="completed", phone=self.phone,
                                          now=self.now, tier=tier, findings=findings))
        self.fire("conclude")
        # facts a later conversation needs (e.g. a borderline temperature to re-check)
        for fid in conv.flows:
            for fact, hours in self.e.lib.flows[fid].carry_facts.items():
                if fact in conv.facts:
                    self.s.prior[fact] = Prior(self.now, hours)
        advice: list[str] = []
        for f in findings:
            if f.tier == tier and f.advice and f.advice not in advice:
                advice.append(f.advice)
        self_care = ""
        if tier in ("ROUTINE", "SOON"):
            flows = [self.e.lib.flows[fid] for fid in conv.flows]
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
            parts.append(Opt(self.fill(self.m["why"].format(reason=short(why)))))
        if "no_reading" in conv.facts:
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
            conv.context_pending = True
            conv.context_asked = True
        elif question:  # no room beside the first-contact line: ask at the next text
            conv.context_due = True
        return reply

    # -- the context question an unregistered number is asked after its outcome (rule 3)
    def context_question_due(self, conv: Conversation, tier: str) -> str:
        """Unregistered number, no risk window known, and being in one would raise the tier:
        ask once, after the answer (rule 7: what to do first, extra questions after). Unknown
        context must never lower a tier, so the question is asked whenever it could matter."""
        question = self.m.get("context_question", "")
        if (not question or conv.context_asked or tier == "EMERGENCY"
                or "ctx_unregistered" not in conv.facts or "risk_window" in conv.facts
                or self.s.risk_window):
            return ""
        raised, _ = self.e.assessor.assess(conv, True)
        return question if TIER_RANK[raised] > TIER_RANK[tier] else ""

    def context_due(self, text: str, norm: str) -> bool:
        """The question did not fit beside the outcome: the next text that is not a new
        symptom ("ok", "thanks") gets it."""
        conv = self.s.conv
        if conv is None or not conv.context_due:
            return False
        conv.context_due = False
        if self.pick_from_menu(norm) or self.flows_named_in(text) or self.flows_answered_by(text):
            return False
        conv.context_pending = conv.context_asked = True
        return True

    def context_pending(self) -> bool:
        conv = self.s.conv
        return bool(conv and conv.context_pending)

    def context_answer(self, text: str, norm: str) -> str:
        """YES (or an answer that is neither yes, no, nor a new symptom: taken as yes, the
        worse reading) puts the conversation in a risk window and gives the raised outcome;
        NO keeps it; a new symptom or reading starts its checklist as usual."""
        conv = self.s.conv
        if conv is None:
            return self.menu_text()
        conv.context_pending = False
        yes = parsing.parse_yes_no(text)
        if yes is None and (self.pick_from_menu(norm) or self.flows_named_in(text)
                            or self.flows_answered_by(text)):
            return self.route(text, norm, self.e.read(text)) or self.menu_text()
        shown = "unclear, taken as yes" if yes is None else ("yes" if yes else "no")
        conv.answers["risk_window_context"] = Answer(
            to_gsm7(text.strip())[:300], "no" if yes is False else "yes", shown)
        if yes is False:
            return self.e.compose(self.m["context_thanks"], Opt(self.m.get("after_outcome", "")))
        conv.facts["risk_window"] = Fact(self.now, "risk_window_context")
        return self.outcome()
