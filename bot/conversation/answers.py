"""Answers: what a text says, put into the conversation.

``Answers.absorb`` takes everything the reader found in a text (who is texting, treatment
context, signs, values) and fills the answers of every checklist they give (``answered_by``,
option ``concepts``, ``value`` in the flow files), so a question whose answer is known is not
asked. ``parse``/``store`` read and keep the answer to the question that is pending.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from ..sms import to_gsm7
from . import parsing
from .flows import Flow, Question, Score
from .reading import Finding, Reading
from .session import Answer, Conversation, Fact, Session

if TYPE_CHECKING:
    from .engine import Engine

NONE_WORDS = {"none", "no", "nope", "nah", "na", "n a", "nil", "not got one", "dont have one",
              "no thermometer", "havent got one", "no reading", "cant", "cant check"}


class Answers:
    def __init__(self, engine: Engine, session: Session, now: float):
        self.e = engine
        self.s = session
        self.now = now
        # signs first said in this turn: news that can overrule an earlier healthy answer
        self.fresh: set[str] = set()
        self.fresh_values: set[str] = set()  # readings first given in this text (worse_news)

    @property
    def conv(self) -> Conversation:
        if self.s.conv is None:  # callers start one first (Turn.conv)
            raise RuntimeError("no conversation to put answers in")
        return self.s.conv

    def fact(self, name: str, source: str) -> None:
        self.conv.facts[name] = Fact(self.now, source)

    # -- everything a text says
    def absorb(self, reading: Reading) -> bool:
        """Who is texting, treatment context, the signs and values the text names, and the
        answers they give. True when something new was learned."""
        conv = self.conv
        if reading.caregiver and (not self.s.texter or self.s.texter in ("he", "she")):
            self.s.texter = reading.caregiver
        learned = self.absorb_context(reading)
        said = reading.concepts() | {f.concept for f in reading.findings if f.kind == "context"
                                     and not (f.negated or f.hypothetical)}
        new = [c for c in sorted(said) if c not in conv.signs]
        for c in new:
            conv.signs.append(c)
            self.fact(f"saw_{c}", "patient_text")
        self.fresh.update(new)
        for f in reading.current():
            conv.quotes.setdefault(f.concept, to_gsm7(f.words)[:120])
        values = dict(reading.values)
        total = values.pop("count_total", None)
        if total is not None:  # "thats 6 now": the conversation's counts, never lowered
            for name in [n for n in conv.values if n.endswith("_count")]:
                if total > conv.values[name]:
                    values[name] = total
        for name, value in values.items():
            if name in conv.values and reading.recheck:
                self.carry_earlier(name, conv.values[name], value, reading)
            if conv.values.get(name) != value:
                conv.values[name] = value
                self.fresh_values.add(name)
                # the words of the newest reading (an answer taken from it reads them)
                conv.quotes[name] = to_gsm7(reading.value_words.get(name) or
                                            reading.value_words.get("count_total", ""))[:120]
                learned = True
        filled = self.fill_answers()
        return bool(learned or new or filled)

    def carry_earlier(self, name: str, earlier: float, now: float, reading: Reading) -> None:
        """A reading taken again within the conversation ("37.6", then "rechecked an hour
        later its 37.7"): the facts the earlier reading set that a checklist carries to a
        later conversation (its ``carry_facts``) become ``prior_<fact>``, as when the re-check
        comes in a new conversation (clinical-rules.md > Fever SOON row 1: "re-check in 1
        hour; URGENT if then >= 38.0 or still >= 37.5"), and the new reading is the answer,
        lower or higher ("rechecked an hour later, 37.1" is no longer raised)."""
        conv = self.conv
        for fid in conv.flows:
            flow = self.e.lib.flows[fid]
            for q in flow.questions if flow.carry_facts else ():
                if q.value != name:
                    continue
                for rule in q.sets:
                    if rule.fact in flow.carry_facts and rule.when.holds(earlier):
                        self.fact(f"prior_{rule.fact}", "patient_text")
                if q.id in conv.answers:
                    for rule in q.sets:
                        got = conv.facts.get(rule.fact)
                        if got is not None and got.source == q.id:
                            del conv.facts[rule.fact]
                    self.store(q, now, reading.value_words.get(name) or reading.text)
                    conv.answers[q.id].from_text = True

    def combine_across_texts(self) -> list[Finding]:
        """The flow files' combinations over everything the conversation's texts said, not one
        text alone: "nose bleeding again", then "its been going 35 mins now" is a bleed past 30
        minutes; and within an episode, its earlier conversations' too ("still going, 35 mins
        now" after the nosebleed's outcome). New concepts join the conversation's signs; the
        red flags among them are returned (the turn answers them as red flags)."""
        conv = self.conv
        own = set(conv.signs)
        # within an episode, what its earlier conversations said counts too, but only with
        # something this conversation said: nothing is concluded again from old texts alone
        signs = own | set(conv.episode_signs)
        values = {**conv.episode_values, **conv.values} if conv.episode_values else conv.values
        flags: list[Finding] = []
        combos, by = self.e.reader.combinations, self.e.reader.combos_by
        # in the flow files' order, only those a sign can reach; a combination's conclusion
        # can complete a later one in the same pass
        todo = sorted({k for sign in own for k in by.get(sign, ())})
        while todo:
            k = heapq.heappop(todo)
            combo = combos[k]
            if combo.then in signs or not all(c in signs for c in combo.all):
                continue
            if not combo.values_hold(values):
                continue
            signs.add(combo.then)
            for later in by.get(combo.then, ()):
                if later > k:
                    heapq.heappush(todo, later)
            conv.signs.append(combo.then)
            self.fresh.add(combo.then)
            self.fact(f"saw_{combo.then}", "patient_text")
            words = " ... ".join(conv.quotes.get(c, c) for c in (*combo.all, *combo.at_least))
            conv.quotes.setdefault(combo.then, words[:120])
            concept = self.e.reader.concepts.get(combo.then)
            if concept is not None and concept.kind == "red_flag":
                flags.append(Finding(combo.then, "red_flag", words, 0, 0))
        if flags:
            self.fill_answers()
        return flags

    def absorb_context(self, reading: Reading) -> bool:
        """Treatment facts from the patient's words (CAR-T 5 days ago, chemo last week,
        neutrophils 0.3) as context facts of this conversation, like the profile's; the
        windows' lengths are flow data (``flows/windows.yaml``)."""
        conv = self.conv
        w = self.e.lib.windows
        v = reading.values
        add: list[str] = []
        risk = False
        said = {f.concept for f in reading.findings if f.kind == "context"
                and not (f.negated or f.hypothetical)}
        if "car_t" in said:
            days = v.get("car_t_days")
            if days is None or days <= w.car_t_crs_days:
                add.append("ctx_car_t_window")
                risk = True
            if days is None or days <= w.car_t_icans_days:
                add.append("ctx_car_t_neuro_window")
        if "blinatumomab" in said:
            add += ["ctx_blinatumomab", "ctx_blinatumomab_early"]
            risk = True
        if "on_chemo" in said:
            days = v.get("chemo_days")
            risk = risk or days is None or days <= w.chemo_days
        if "neutropenic" in said or v.get("neutrophils", 9.0) < 0.5:
            risk = True
        if "low_platelets" in said or v.get("platelets", 999.0) < 50:
            add.append("ctx_platelets_lt50")
        if v.get("platelets", 999.0) < 20:
            add.append("ctx_platelets_lt20")
        if "mediastinal_mass" in said:
            add.append("ctx_t_cell_mass")
        new = [f for f in add if f not in conv.text_ctx]
        conv.text_ctx += new
        for f in new:
            self.fact(f, "patient_text")
        if risk and "risk_window" not in conv.facts:
            self.fact("risk_window", "patient_text")
            new.append("risk_window")
        return bool(new)

    def worse_news(self, q: Question, answer: Answer) -> bool:
        """A sign first said now that gives a worse answer than the healthy one given before:
        "1" (no) to "is your poo bloody?", then "theres blood when I wipe"; or a higher
        temperature than the one answered ("temp 37.4", then "now 38.0": any single reading
        counts). The news counts (the safer reading); an answer that named a sign is never
        taken back by a later text."""
        fresh = self.fresh
        if q.value and q.value in self.fresh_values and (
                q.type == "temperature" or q.value.endswith("_count")):
            # a higher reading or count than the one answered: "temp 37.4", "now 38.0";
            # "2 more, thats 6"
            now = self.conv.values[q.value]
            return answer.value == "none" or (isinstance(answer.value, float | int)
                                              and now > answer.value)
        if not fresh:
            return False
        if q.type == "yes_no":
            return answer.value == "no" and bool(fresh & set(q.answered_by))
        ids = answer.value if isinstance(answer.value, list) else [answer.value]
        if q.type == "multi_choice":  # a sign not among the options given adds to them
            return any(fresh & set(o.concepts) for o in q.options if o.id not in ids)
        if q.type == "choice":  # one answer: only a healthy one ("1 No") is overruled
            given = [o for o in q.options if o.id in ids]
            return not any(o.concepts for o in given) and any(
                fresh & set(o.concepts) for o in q.options)
        return False

    def fill_answers(self) -> list[str]:
        """Answers that the signs and values seen so far give, in any checklist. A checklist's
        EMERGENCY screen is filled only inside that checklist (its YES assumes the checklist's
        own context: "very drowsy" is an emergency sign with a fever)."""
        conv = self.conv
        signs = set(conv.signs)
        values = conv.values
        in_conv = set(conv.flows) | set(conv.queue)
        filled = []
        index = self.e.fill_index
        for k in self.e.fillable(signs, values):  # what something said so far could answer
            flow, q = index[k][:2]
            if q.id in conv.answers and not self.worse_news(q, conv.answers[q.id]):
                continue
            if (q.screen and flow.id not in in_conv) or (
                    q.only_if is not None and not q.only_if.holds(conv.facts)):
                continue
            value: Any = None
            words: list[str] = []
            yes = q.type == "yes_no" and bool(signs & set(q.answered_by))
            # signs for both answers ("stopped fine" yesterday, "oozing 20 mins" today): the
            # question's worse answer
            if yes and q.worse == "no" and signs & set(q.answered_no_by):
                yes = False
            if yes:
                value = "yes"
                words = [f"{c.replace('_', ' ')} ('{conv.quotes.get(c, c)}')"
                         for c in q.answered_by if c in signs]
            elif q.type == "temperature" and "temperature" in values:
                c = values["temperature"]
                value = parsing.parse_temperature(conv.quotes.get("temperature", "")) or \
                    parsing.Temperature(c, round(c * 9 / 5 + 32, 1), f"{c:g} C")
                words = [conv.quotes.get("temperature", "")]
            elif q.type == "temperature" and "no_thermometer" in signs:
                value = "none"
                words = [conv.quotes.get("no_thermometer", "")]
            elif q.type == "number" and q.value in values:
                n = values[q.value]
                if (q.minimum is None or n >= q.minimum) and (q.maximum is None or n <= q.maximum):
                    value = n
                    words = [conv.quotes.get(q.value, "")]
            elif q.type == "yes_no" and signs & set(q.answered_no_by):
                value = "no"
                words = [conv.quotes.get(c, c) for c in q.answered_no_by if c in signs]
            elif q.type == "multi_choice":
                if self.known_options(q, signs):
                    filled.append(q.id)
                continue
            elif q.type == "choice":
                picked = [o.id for o in q.options if signs & set(o.concepts)]
                if picked:
                    value = picked[-1]
                    words = [conv.quotes.get(c, c) for o in q.options
                             for c in o.concepts if c in signs]
            if value is not None:
                said = "; ".join(w for w in dict.fromkeys(words) if w)
                self.store(q, value, said, shown=f"{value}: {said}" if said and isinstance(
                    value, str) and value in ("yes", "no") else None)
                conv.answers[q.id].from_text = True
                filled.append(q.id)
        for sc in self.e.value_scores:
            if sc.value in values and sc.id not in conv.answers:
                self.score_from_value(sc, values)
                filled.append(sc.id)
        return filled

    def known_options(self, q: Question, signs: set[str]) -> bool:
        """Options of an any-of-these question that the patient already named: their facts
        count at once, and the question, if asked, lists only the others (rule 8)."""
        conv = self.conv
        known = conv.partial.get(q.id, [])
        new = [o.id for o in q.options if signs & set(o.concepts) and o.id not in known]
        if not new:
            return False
        conv.partial[q.id] = known + new
        for rule in q.sets:
            if rule.when.holds(conv.partial[q.id]):
                self.fact(rule.fact, q.id)
        labels = {o.id: o.label for o in q.options}
        conv.partial_shown[q.id] = ", ".join(labels[i] for i in conv.partial[q.id])
        if len(conv.partial[q.id]) == len(q.options):
            self.store(q, conv.partial[q.id], "(all named in the patient's words)")
        return True

    def score_from_value(self, sc: Score, values: dict[str, float]) -> None:
        """A score the caregiver reports as a total ("ICE 7, usually 10") stands for its
        questions, which are then not asked."""
        conv = self.conv
        got = values[sc.value or ""]
        usual = self.usual_score(sc)
        shown = f"{got:g} of {sc.max:g} (reported; usual {usual[1]})"
        conv.answers[sc.id] = Answer(shown, got, shown, from_text=True)
        for qid in sc.questions:
            conv.answers.setdefault(qid, Answer("(total reported)", None,
                                                "in the reported total"))
        if got < usual[0]:
            self.fact(sc.below_usual, sc.id)

    def usual_score(self, sc: Score) -> tuple[float, str]:
        said = self.conv.values.get(sc.usual_value or "") if self.s.conv else None
        if said is not None:
            return float(said), f"{said:g}, as you told us"
        raw = self.s.ctx.usual.get(sc.usual_field)
        if raw is not None:
            return float(raw), f"{float(raw):g}"
        return sc.usual_default, f"{sc.usual_default:g}, not known"

    # -- the pending question
    @staticmethod
    def parse(q: Question, text: str) -> Any:
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
        conv = self.conv
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
        conv.answers[q.id] = Answer(to_gsm7(raw.strip())[:300], numeric, shown or str(value))
        for rule in q.sets:
            if rule.when.holds(numeric):
                self.fact(rule.fact, q.id)
        if q.score is not None:
            self.update_score(q.score)

    def store_unclear(self, q: Question, text: str) -> None:
        self.conv.answers[q.id] = Answer(to_gsm7(text.strip())[:300], None, "unclear")

    def update_score(self, score_id: str) -> None:
        """Sum a score's answered questions; set its ``below_usual`` fact as soon as the
        points already lost make the patient's usual total unreachable."""
        conv = self.conv
        for flow in self.e.lib.flows.values():
            for sc in flow.scores:
                if sc.id != score_id:
                    continue
                got = lost = 0.0
                answered = 0
                for qid in sc.questions:
                    a = conv.answers.get(qid)
                    if a is None:
                        continue
                    q = flow.question(qid)
                    points = (1.0 if a.value == "yes" else 0.0) if q.type == "yes_no" else (
                        float(a.value) if isinstance(a.value, int | float) else 0.0)
                    got += points
                    lost += q.points() - points
                    answered += 1
                usual, usual_shown = self.usual_score(sc)
                done = answered == len(sc.questions)
                shown = (f"{got:g} of {sc.max:g}" if done else
                         f"{got:g} of {sc.max:g} so far, {lost:g} lost")
                shown += f" (usual {usual_shown})"
                conv.answers[sc.id] = Answer(shown, got, shown)
                if sc.max - lost < usual:
                    self.fact(sc.below_usual, sc.id)

    def prefill(self, flow: Flow, text: str) -> None:
        """A bare reading ("38.9") as the first text fills the reading question."""
        reading = self.e.read(text)
        if reading.bare_number is None:
            return
        for q in flow.questions:
            if not q.prefill or q.id in self.conv.answers:
                continue
            value = self.parse(q, text)
            if value is not None and value != "none":
                self.store(q, value, text)
