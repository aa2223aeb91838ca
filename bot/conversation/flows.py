"""Clinical content as data: loading and validating ``flows/*.yaml``.

The engine knows no symptom; everything clinical is here, in files clinicians review:

* ``flows/<checklist>.yaml``: one checklist (questions, the facts answers set, tier rules);
* ``flows/red_flags.yaml``: phrases that mean EMERGENCY from any point of any conversation;
* ``flows/messages.yaml``: every other patient-facing text (greeting, menu, tier wording, help).

A file that breaks the format stops start-up with ``FlowError("fever.yaml: questions[2].type:
...")``, naming the file and the field.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .parsing import Option
from .reading import Combination, Concept


def _yaml(text: str) -> Any:
    """libyaml's C loader when installed (about 10x faster start-up), else the pure-Python
    one. PyYAML is imported here, not with the module: a start-up that loads the engine
    snapshot reads no YAML (importing it cost 10 to 19 ms of every start)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # nosec B506 # a safe loader (C or Python)


TIERS = ("ROUTINE", "SOON", "URGENT", "EMERGENCY")
TIER_RANK = {t: i for i, t in enumerate(TIERS)}
QUESTION_TYPES = ("yes_no", "temperature", "number", "choice", "multi_choice", "text")
CITE_RE = re.compile(r"^clinical-rules\.md > (?P<section>[^>]+?) > "
                     r"(?:(?P<tier>[A-Z]+)(?: row (?P<row>\d+))?|rule (?P<rule>\d+))$")
ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_FLOW_IDS = {"red_flags", "messages", "concepts", "windows", "menu", "new", "idle",
                     "asking", "outcome", "follow_up", "opted_out"}
LANGUAGES = ("en",)  # the reader's languages: flows/language/<lang>.yaml and wordings.<lang>
VALUES = ("temperature", "spo2", "systolic_bp", "platelets", "neutrophils", "duration_min",
          "vomit_count", "stool_count", "ice_score", "usual_ice_score", "pain_score",
          "car_t_days", "chemo_days", "count_total", "heart_rate")


class FlowError(ValueError):
    """A flow file does not follow the format. The message names the file and the field."""


def tier_max(*tiers: str | None) -> str:
    present = [t for t in tiers if t]
    return max(present, key=TIER_RANK.__getitem__) if present else "ROUTINE"


def raise_tier(tier: str) -> str:
    return TIERS[min(TIER_RANK[tier] + 1, len(TIERS) - 1)]


# --------------------------------------------------------------------------- conditions

@dataclass(frozen=True)
class FactCondition:
    """``{all: [...], any: [...], none: [...]}`` over the facts of a conversation."""

    all: tuple[str, ...] = ()
    any: tuple[str, ...] = ()
    none: tuple[str, ...] = ()

    def holds(self, facts: Iterable[str]) -> bool:
        have = set(facts)
        return (all(f in have for f in self.all)
                and (not self.any or any(f in have for f in self.any))
                and not any(f in have for f in self.none))

    def matched(self, facts: Iterable[str]) -> list[str]:
        """The findings that made it true. A rule over ``any`` alone counts each fact it saw as
        its own finding, so "cough and sore throat" are two SOON findings (rule 2)."""
        have = set(facts)
        if not self.holds(have):
            return []
        if self.all or not self.any:
            return ["+".join(self.all) or "none:" + "+".join(self.none)]
        return [f for f in self.any if f in have]

    def names(self) -> set[str]:
        return set(self.all) | set(self.any) | set(self.none)


@dataclass(frozen=True)
class AnswerTest:
    """When an answer sets a fact. One of: ``is`` (yes/no/none/unknown), ``at_least``/``below``
    (numbers, temperatures in C), ``any_of`` (choice ids)."""

    is_: str | None = None
    at_least: float | None = None
    below: float | None = None
    any_of: tuple[str, ...] = ()

    def holds(self, value: Any) -> bool:
        if self.is_ is not None:
            return value == self.is_
        if self.any_of:
            values = value if isinstance(value, list) else [value]
            return any(v in self.any_of for v in values)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if self.at_least is not None and value < self.at_least:
            return False
        return not (self.below is not None and value >= self.below)


@dataclass(frozen=True)
class SetFact:
    fact: str
    when: AnswerTest


@dataclass(frozen=True)
class Question:
    id: str
    type: str
    ask: str
    example: str
    red_flag: bool = False
    worse: Any = None
    only_if: FactCondition | None = None
    prefill: bool = False
    options: tuple[Option, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    sets: tuple[SetFact, ...] = ()
    score: str | None = None  # the id of the flow's score this answer adds points to
    # Answered from what the patient wrote anywhere (bot/conversation/reading.py): a yes/no
    # question is "yes" when one of these concepts is found; a number question takes the value.
    answered_by: tuple[str, ...] = ()
    answered_no_by: tuple[str, ...] = ()  # concepts that answer a yes/no question "no"
    value: str | None = None
    # The checklist's one-question EMERGENCY screen (rule 7): asked before any URGENT outcome.
    screen: bool = False

    def points(self) -> float:
        """The most this question adds to its score (yes_no: a yes is 1 point)."""
        return 1.0 if self.type == "yes_no" else float(self.maximum or 0)


@dataclass(frozen=True)
class Rule:
    id: str
    tier: str
    when: FactCondition
    reason: str
    cites: str
    advice: str = ""
    infection: bool = False  # rule 3: one tier up inside a risk window


@dataclass(frozen=True)
class Score:
    """A total summed from the answers of the questions marked ``score: <id>``, compared
    with the patient's usual total (a profile field; ``default`` when unknown). ``below_usual``
    is set as soon as the points already lost make the usual total unreachable, so rule 7 can
    stop at the first lost point when the usual score is the maximum."""

    id: str
    max: float
    usual_field: str
    usual_default: float
    below_usual: str  # the fact set when the total is (or can only end) below the usual one
    questions: tuple[str, ...] = ()
    value: str | None = None        # a reader value that gives the total ("ICE score 7")
    usual_value: str | None = None  # a reader value that gives the usual total ("usually 9")


@dataclass(frozen=True)
class Windows:
    """Treatment windows in days (``flows/windows.yaml``): clinical numbers are data."""

    chemo_days: int = 42
    chemo_phases: frozenset[str] = frozenset()
    car_t_crs_days: int = 30
    car_t_icans_days: int = 56
    blinatumomab_early_days: int = 14


@dataclass(frozen=True)
class Flow:
    id: str
    title: str
    menu_label: str
    triggers: tuple[str, ...]
    questions: tuple[Question, ...]
    rules: tuple[Rule, ...]
    self_care: str
    self_care_cites: str
    sources: tuple[str, ...]
    carry_facts: dict[str, float] = field(default_factory=dict)
    path: str = ""
    # Patient context (conversation/context.py ctx_* facts): when it holds, this checklist is
    # offered first in the menu, wins ambiguous free text, and also answers to ``window_triggers``.
    offer_first_when: FactCondition | None = None
    window_triggers: tuple[str, ...] = ()
    scores: tuple[Score, ...] = ()
    # Checklists to go on with when this one ends below URGENT and the patient is in their
    # window (their offer_first_when holds): after CAR-T, CRS then neurotoxicity.
    continue_with: tuple[str, ...] = ()
    # A checklist with offer_first_when whose own signs (those no general checklist asks)
    # lead to it whatever the patient's context: the SVC signs, whose context (T-cell ALL, a
    # mediastinal mass) the profile often does not record. Not the CRS checklist: "dizzy"
    # outside any CAR-T or blinatumomab window is not a CRS sign.
    signs_lead_outside_window: bool = False

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise KeyError(qid)


@dataclass(frozen=True)
class RedFlag:
    id: str
    reason: str
    advice: str
    wordings: dict[str, tuple[str, ...]]
    cites: str
    not_wordings: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Library:
    """Everything loaded from ``flows/``: built once at start-up."""

    flows: dict[str, Flow]
    red_flags: tuple[RedFlag, ...]
    messages: dict[str, Any]
    menu: tuple[str, ...]  # flow ids in menu order
    concepts: tuple[Concept, ...] = ()      # red flags, signs and context, language "en"
    combinations: tuple[Combination, ...] = ()
    # findings the same text then says are over (concepts.yaml ``settled``): Combination's
    # ``all`` the settling concepts, ``then`` the finding they settle
    settled: tuple[Combination, ...] = ()
    languages: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: Windows = field(default_factory=lambda: Windows())

    def all_rules(self) -> list[tuple[Flow, Rule]]:
        return [(f, r) for f in self.flows.values() for r in f.rules]


# --------------------------------------------------------------------------- validation

class _Reader:
    """Walks a YAML mapping and reports problems as ``file: path.to.field: what``."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, where: str, what: str) -> FlowError:
        return FlowError(f"{self.file}: {where}: {what}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping")
        return value

    def get(self, data: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
            default: Any = ..., allowed: Iterable[str] | None = None) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in data:
            if default is ...:
                raise self.fail(path, "is required")
            return default
        value = data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(path, "must be a number")
        if not isinstance(value, kind):
            name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(path, f"must be {name}, got {type(value).__name__}")
        if isinstance(value, str) and not value.strip():
            raise self.fail(path, "must not be empty")
        if allowed is not None and value not in allowed:
            raise self.fail(path, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def unknown_keys(self, data: dict[str, Any], known: set[str], where: str) -> None:
        extra = sorted(set(data) - known)
        if extra:
            raise self.fail(where or "top level", f"unknown field(s) {', '.join(extra)}")

    def str_list(self, data: dict[str, Any], key: str, where: str, default: Any = ...
                 ) -> tuple[str, ...]:
        value = self.get(data, key, where, list, default)
        path = f"{where}.{key}" if where else key
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{path}[{i}]", "must be a non-empty string")
        return tuple(value)

    def fact_condition(self, value: Any, where: str) -> FactCondition:
        data = self.mapping(value, where)
        self.unknown_keys(data, {"all", "any", "none"}, where)
        cond = FactCondition(
            all=self.str_list(data, "all", where, ()),
            any=self.str_list(data, "any", where, ()),
            none=self.str_list(data, "none", where, ()),
        )
        if not (cond.all or cond.any or cond.none):
            raise self.fail(where, "needs 'all', 'any' or 'none'")
        return cond

    def cite(self, data: dict[str, Any], where: str, key: str = "cites") -> str:
        cites = self.get(data, key, where, str)
        if not CITE_RE.match(cites):
            raise self.fail(f"{where}.{key}" if where else key,
                            "must read 'clinical-rules.md > <section> > <TIER>[ row N]' or "
                            f"'... > rule N', got {cites!r}")
        return cites


def _check_template(reader: _Reader, text: str, where: str, allowed: set[str]) -> None:
    for _, name, _, _ in string.Formatter().parse(text):
        if name is not None and name not in allowed:
            raise reader.fail(where, f"unknown placeholder {{{name}}}; allowed: "
                              f"{', '.join(sorted(allowed)) or 'none'}")


def _question(reader: _Reader, raw: Any, where: str, ids: set[str]) -> Question:
    data = reader.mapping(raw, where)
    reader.unknown_keys(data, {"id", "type", "ask", "example", "red_flag", "worse", "only_if",
                               "prefill", "options", "min", "max", "sets", "score",
                               "answered_by", "answered_no_by", "value", "screen"}, where)
    qid = reader.get(data, "id", where, str)
    if not ID_RE.match(qid):
        raise reader.fail(f"{where}.id", "must be lower_snake_case")
    if qid in ids:
        raise reader.fail(f"{where}.id", f"duplicate question id {qid!r}")
    qtype = reader.get(data, "type", where, str, allowed=QUESTION_TYPES)
    options: tuple[Option, ...] = ()
    if qtype in ("choice", "multi_choice"):
        raw_opts = reader.get(data, "options", where, list)
        if len(raw_opts) < 2:
            raise reader.fail(f"{where}.options", "needs at least two options")
        opts = []
        for j, raw_opt in enumerate(raw_opts):
            ow = f"{where}.options[{j}]"
            od = reader.mapping(raw_opt, ow)
            reader.unknown_keys(od, {"id", "label", "synonyms", "concepts"}, ow)
            opts.append(Option(reader.get(od, "id", ow, str), reader.get(od, "label", ow, str),
                               reader.str_list(od, "synonyms", ow, ()),
                               reader.str_list(od, "concepts", ow, ())))
        options = tuple(opts)
    elif "options" in data:
        raise reader.fail(f"{where}.options", f"only for choice questions, not {qtype}")
    option_ids = {o.id for o in options}
    sets = []
    for j, raw_set in enumerate(reader.get(data, "sets", where, list, [])):
        sw = f"{where}.sets[{j}]"
        sd = reader.mapping(raw_set, sw)
        reader.unknown_keys(sd, {"fact", "when"}, sw)
        fact = reader.get(sd, "fact", sw, str)
        if not ID_RE.match(fact):
            raise reader.fail(f"{sw}.fact", "must be lower_snake_case")
        wd = reader.mapping(reader.get(sd, "when", sw, dict), f"{sw}.when")
        reader.unknown_keys(wd, {"is", "at_least", "below", "any_of"}, f"{sw}.when")
        test = AnswerTest(
            is_=reader.get(wd, "is", f"{sw}.when", str, None,
                           allowed=("yes", "no", "none", "unknown")),
            at_least=reader.get(wd, "at_least", f"{sw}.when", (int, float), None),
            below=reader.get(wd, "below", f"{sw}.when", (int, float), None),
            any_of=reader.str_list(wd, "any_of", f"{sw}.when", ()),
        )
        if test.is_ is None and test.at_least is None and test.below is None and not test.any_of:
            raise reader.fail(f"{sw}.when", "needs one of is, at_least, below, any_of")
        if test.any_of and not set(test.any_of) <= option_ids:
            bad = sorted(set(test.any_of) - option_ids)
            raise reader.fail(f"{sw}.when.any_of", f"unknown option id(s) {', '.join(bad)}")
        if (test.at_least is not None or test.below is not None) and qtype not in (
                "temperature", "number"):
            raise reader.fail(f"{sw}.when", f"at_least/below need a number question, not {qtype}")
        if test.is_ in ("yes", "no") and qtype != "yes_no":
            raise reader.fail(f"{sw}.when.is", f"yes/no tests need a yes_no question, not {qtype}")
        sets.append(SetFact(fact, test))
    red_flag = reader.get(data, "red_flag", where, bool, False)
    worse = data.get("worse")
    if red_flag and worse is None:
        raise reader.fail(f"{where}.worse", "a red_flag question must say which answer is worse "
                          "(taken after a second unclear answer, clinical-rules.md rule 4)")
    if worse is not None:
        if qtype == "yes_no" and worse not in ("yes", "no"):
            raise reader.fail(f"{where}.worse", "must be yes or no")
        if qtype in ("temperature", "number") and not isinstance(worse, int | float):
            raise reader.fail(f"{where}.worse", "must be a number")
        if qtype in ("choice", "multi_choice"):
            worse_ids = worse if isinstance(worse, list) else [worse]
            if not set(worse_ids) <= option_ids:
                raise reader.fail(f"{where}.worse", "must be option id(s) of this question")
    only_if = data.get("only_if")
    return Question(
        id=qid,
        type=qtype,
        ask=reader.get(data, "ask", where, str),
        example=reader.get(data, "example", where, str),
        red_flag=red_flag,
        worse=worse,
        only_if=reader.fact_condition(only_if, f"{where}.only_if") if only_if else None,
        prefill=reader.get(data, "prefill", where, bool, False),
        options=options,
        minimum=reader.get(data, "min", where, (int, float), None),
        maximum=reader.get(data, "max", where, (int, float), None),
        sets=tuple(sets),
        score=_score_ref(reader, data, where, qtype),
        answered_by=reader.str_list(data, "answered_by", where, ()),
        answered_no_by=reader.str_list(data, "answered_no_by", where, ()),
        value=reader.get(data, "value", where, str, None, allowed=VALUES),
        screen=reader.get(data, "screen", where, bool, False),
    )


def _score_ref(reader: _Reader, data: dict[str, Any], where: str, qtype: str) -> str | None:
    score = reader.get(data, "score", where, str, None)
    if score is None:
        return None
    if not ID_RE.match(score):
        raise reader.fail(f"{where}.score", "must be lower_snake_case (a score id)")
    if qtype not in ("yes_no", "number"):
        raise reader.fail(f"{where}.score", f"only yes_no and number questions add to a "
                          f"score, not {qtype}")
    if qtype == "number" and (data.get("min") != 0 or not isinstance(data.get("max"), int)
                              or data["max"] < 1):
        raise reader.fail(f"{where}.score", "a scored number question needs min: 0 and a "
                          "whole-number max")
    return score


def _scores(reader: _Reader, data: dict[str, Any], questions: list[Question]) -> tuple[Score, ...]:
    from ..profile_fields import BY_NAME  # the profile field spec shared with the dashboard

    out = []
    seen: set[str] = set()
    qids = {q.id for q in questions}
    raw_scores = reader.get(data, "scores", "", list, [])
    declared = {sd.get("id") for sd in raw_scores if isinstance(sd, dict)}
    for i, q in enumerate(questions):
        if q.score is not None and q.score not in declared:
            raise reader.fail(f"questions[{i}].score", f"no score {q.score!r} under scores")
    for i, raw in enumerate(raw_scores):
        where = f"scores[{i}]"
        sd = reader.mapping(raw, where)
        reader.unknown_keys(sd, {"id", "max", "usual", "below_usual", "value", "usual_value"},
                            where)
        sid = reader.get(sd, "id", where, str)
        if not ID_RE.match(sid) or sid in seen or sid in qids:
            raise reader.fail(f"{where}.id", "must be lower_snake_case, unique, and not a "
                              "question id")
        seen.add(sid)
        total = reader.get(sd, "max", where, int)
        usual = reader.mapping(reader.get(sd, "usual", where, dict), f"{where}.usual")
        reader.unknown_keys(usual, {"profile", "default"}, f"{where}.usual")
        usual_field = reader.get(usual, "profile", f"{where}.usual", str)
        spec = BY_NAME.get(usual_field)
        if spec is None or spec.kind != "int":
            raise reader.fail(f"{where}.usual.profile", f"{usual_field!r} is not a whole-number "
                              "field of bot/profile.py")
        default = reader.get(usual, "default", f"{where}.usual", int)
        if not 0 <= default <= total:
            raise reader.fail(f"{where}.usual.default", f"must be between 0 and {total}")
        below = reader.get(sd, "below_usual", where, str)
        if not ID_RE.match(below):
            raise reader.fail(f"{where}.below_usual", "must be a lower_snake_case fact name")
        members = [q for q in questions if q.score == sid]
        if not members:
            raise reader.fail(f"{where}.id", f"no question has score: {sid}")
        points = sum(q.points() for q in members)
        if points != total:
            raise reader.fail(f"{where}.max", f"is {total} but the questions with score: {sid} "
                              f"add up to {points:g}")
        out.append(Score(sid, float(total), usual_field, float(default), below,
                         tuple(q.id for q in members),
                         reader.get(sd, "value", where, str, None, allowed=VALUES),
                         reader.get(sd, "usual_value", where, str, None, allowed=VALUES)))
    return tuple(out)


def load_flow(path: Path) -> Flow:
    import yaml

    reader = _Reader(path.name)
    try:
        raw = _yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise reader.fail("top level", f"not valid YAML: {exc}") from exc
    data = reader.mapping(raw, "top level")
    reader.unknown_keys(data, {"id", "title", "menu_label", "triggers", "questions", "rules",
                               "self_care", "self_care_cites", "sources", "carry_facts",
                               "offer_first_when", "window_triggers", "scores",
                               "signs_lead_outside_window",
                               "continue_with"}, "")
    flow_id = reader.get(data, "id", "", str)
    if not ID_RE.match(flow_id) or flow_id in RESERVED_FLOW_IDS:
        raise reader.fail("id", f"{flow_id!r} must be lower_snake_case and not reserved")
    if flow_id != path.stem:
        raise reader.fail("id", f"must match the file name ({path.stem!r})")
    raw_questions = reader.get(data, "questions", "", list)
    if not raw_questions:
        raise reader.fail("questions", "needs at least one question")
    questions: list[Question] = []
    ids: set[str] = set()
    for i, raw_q in enumerate(raw_questions):
        q = _question(reader, raw_q, f"questions[{i}]", ids)
        ids.add(q.id)
        questions.append(q)
    scores = _scores(reader, data, questions)
    answer_names = {q.id for q in questions} | {s.id for s in scores}
    rules = []
    rule_ids: set[str] = set()
    for i, raw_rule in enumerate(reader.get(data, "rules", "", list)):
        where = f"rules[{i}]"
        rd = reader.mapping(raw_rule, where)
        reader.unknown_keys(rd, {"id", "tier", "when", "reason", "cites", "advice", "infection"},
                            where)
        rid = reader.get(rd, "id", where, str)
        if rid in rule_ids:
            raise reader.fail(f"{where}.id", f"duplicate rule id {rid!r}")
        rule_ids.add(rid)
        reason = reader.get(rd, "reason", where, str)
        _check_template(reader, reason, f"{where}.reason", answer_names)
        advice = reader.get(rd, "advice", where, str, "")
        _check_template(reader, advice, f"{where}.advice", set())
        rules.append(Rule(
            id=rid,
            tier=reader.get(rd, "tier", where, str, allowed=TIERS),
            when=reader.fact_condition(reader.get(rd, "when", where, dict), f"{where}.when"),
            reason=reason,
            cites=reader.cite(rd, where),
            advice=advice,
            infection=reader.get(rd, "infection", where, bool, False),
        ))
    carry = reader.get(data, "carry_facts", "", dict, {})
    for fact, hours in carry.items():
        if not isinstance(hours, int | float) or isinstance(hours, bool) or hours <= 0:
            raise reader.fail(f"carry_facts.{fact}", "must be a positive number of hours")
    return Flow(
        id=flow_id,
        title=reader.get(data, "title", "", str),
        menu_label=reader.get(data, "menu_label", "", str),
        triggers=reader.str_list(data, "triggers", ""),
        questions=tuple(questions),
        rules=tuple(rules),
        self_care=reader.get(data, "self_care", "", str),
        self_care_cites=reader.cite(data, "", "self_care_cites"),
        sources=reader.str_list(data, "sources", ""),
        carry_facts=dict(carry),
        path=str(path),
        offer_first_when=_context_condition(reader, data),
        window_triggers=reader.str_list(data, "window_triggers", "", ()),
        scores=scores,
        continue_with=reader.str_list(data, "continue_with", "", ()),
        signs_lead_outside_window=reader.get(data, "signs_lead_outside_window", "", bool,
                                             False),
    )


def _context_condition(reader: _Reader, data: dict[str, Any]) -> FactCondition | None:
    raw = data.get("offer_first_when")
    if raw is None:
        if data.get("window_triggers"):
            raise reader.fail("window_triggers", "needs offer_first_when (the context in "
                              "which they apply)")
        return None
    cond = reader.fact_condition(raw, "offer_first_when")
    bad = sorted(n for n in cond.names() if not n.startswith("ctx_"))
    if bad:
        raise reader.fail("offer_first_when", f"tests patient context facts (ctx_*) only, "
                          f"not {', '.join(bad)}")
    return cond


def _wordings(reader: _Reader, data: dict[str, Any], key: str, where: str,
              required: bool = True) -> dict[str, tuple[str, ...]]:
    """``wordings: {en: [...], es: [...]}``: each pattern must compile (reading.py)."""
    from .reading import compile_wording

    raw = data.get(key)
    path = f"{where}.{key}"
    if raw is None:
        if required:
            raise reader.fail(path, "is required")
        return {}
    by_lang = reader.mapping(raw, path)
    out = {}
    for lang in by_lang:
        if lang not in LANGUAGES:
            raise reader.fail(f"{path}.{lang}", f"unknown language; known: {', '.join(LANGUAGES)}")
        words = reader.str_list(by_lang, lang, path)
        for j, w in enumerate(words):
            try:
                compile_wording(w)  # escaped by construction: only the shape can be wrong
            except ValueError as exc:
                raise reader.fail(f"{path}.{lang}[{j}]", f"not a valid wording: {exc}") from exc
        out[lang] = words
    if required and "en" not in out:
        raise reader.fail(path, "needs wordings in en")
    return out


def _load_red_flags(path: Path) -> tuple[RedFlag, ...]:
    reader = _Reader(path.name)
    data = reader.mapping(_yaml(path.read_text(encoding="utf-8")), "top level")
    reader.unknown_keys(data, {"red_flags", "sources"}, "")
    flags = []
    for i, raw in enumerate(reader.get(data, "red_flags", "", list)):
        where = f"red_flags[{i}]"
        rd = reader.mapping(raw, where)
        reader.unknown_keys(rd, {"id", "reason", "advice", "wordings", "not_wordings", "cites"},
                            where)
        flags.append(RedFlag(
            id=reader.get(rd, "id", where, str),
            reason=reader.get(rd, "reason", where, str),
            advice=reader.get(rd, "advice", where, str, ""),
            wordings=_wordings(reader, rd, "wordings", where),
            cites=reader.cite(rd, where),
            not_wordings=_wordings(reader, rd, "not_wordings", where, required=False),
        ))
    return tuple(flags)


def _load_concepts(path: Path, red_flags: tuple[RedFlag, ...], lang: str = "en"
                   ) -> tuple[Concept, ...]:
    reader = _Reader(path.name)
    data = reader.mapping(_yaml(path.read_text(encoding="utf-8")), "top level")
    reader.unknown_keys(data, {"concepts", "sources", "combinations", "settled"}, "")
    out = [Concept(rf.id, "red_flag", rf.wordings.get(lang, ()), rf.not_wordings.get(lang, ()))
           for rf in red_flags]
    seen = {c.id for c in out}
    for cid, raw in reader.mapping(reader.get(data, "concepts", "", dict), "concepts").items():
        where = f"concepts.{cid}"
        if not ID_RE.match(cid) or cid in seen:
            raise reader.fail(where, "must be lower_snake_case and unique (red flags included)")
        cd = reader.mapping(raw, where)
        reader.unknown_keys(cd, {"kind", "wordings", "not_wordings"}, where)
        kind = reader.get(cd, "kind", where, str, allowed=("sign", "context"))
        words = _wordings(reader, cd, "wordings", where)
        unlike = _wordings(reader, cd, "not_wordings", where, required=False)
        out.append(Concept(cid, kind, words.get(lang, ()), unlike.get(lang, ())))
        seen.add(cid)
    return tuple(out)


def _load_combinations(path: Path, concepts: tuple[Concept, ...], section: str = "combinations"
                       ) -> tuple[Combination, ...]:
    """``combinations`` (findings ``all`` and a value test add the finding ``then``), or
    ``settled`` (a finding ``finding`` the same text then says is over: one of ``by`` after it,
    nothing of it after that, and the value test holding), read into the same shape."""
    reader = _Reader(path.name)
    data = reader.mapping(_yaml(path.read_text(encoding="utf-8")), "top level")
    known = {c.id for c in concepts}
    out = []
    settled = section == "settled"
    needs_key, then_key = ("by", "finding") if settled else ("all", "then")
    for i, raw in enumerate(reader.get(data, section, "", list, [])):
        where = f"{section}[{i}]"
        cd = reader.mapping(raw, where)
        reader.unknown_keys(cd, {needs_key, then_key, "value", *(("unless",) if settled else ())},
                            where)
        needs = reader.str_list(cd, needs_key, where, ())
        then = reader.get(cd, then_key, where, str)
        unless = reader.str_list(cd, "unless", where, ()) if settled else ()
        if settled and not needs:
            raise reader.fail(where, "needs 'by': the concepts that say it is over")
        for cid in unless:
            if cid not in known:
                raise reader.fail(where, f"unknown concept {cid!r}")
        for cid in (*needs, then):
            if cid not in known:
                raise reader.fail(where, f"unknown concept {cid!r}")
        at_least: dict[str, float] = {}
        below: dict[str, float] = {}
        or_unknown: set[str] = set()
        for name, test in reader.mapping(cd.get("value", {}), f"{where}.value").items():
            if name not in VALUES:
                raise reader.fail(f"{where}.value.{name}", "unknown value")
            t = reader.mapping(test, f"{where}.value.{name}")
            reader.unknown_keys(t, {"at_least", "below", "or_unknown"}, f"{where}.value.{name}")
            if reader.get(t, "or_unknown", f"{where}.value.{name}", bool, False):
                or_unknown.add(name)
            if "at_least" in t:
                at_least[name] = float(reader.get(t, "at_least", f"{where}.value.{name}",
                                                  (int, float)))
            if "below" in t:
                below[name] = float(reader.get(t, "below", f"{where}.value.{name}",
                                               (int, float)))
        if not needs and not (at_least or below):
            raise reader.fail(where, "needs 'all' concepts or a value test")
        out.append(Combination(needs, then, at_least, below, frozenset(or_unknown),
                               tuple(unless)))
    return tuple(out)


def _load_languages(base: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for lang in LANGUAGES:
        path = base / "language" / f"{lang}.yaml"
        reader = _Reader(f"language/{lang}.yaml")
        if not path.is_file():
            raise reader.fail("top level", "file not found")
        data = reader.mapping(_yaml(path.read_text(encoding="utf-8")), "top level")
        words = base / "language" / f"{lang}_words.txt"
        data["dictionary"] = frozenset(words.read_text(encoding="utf-8").split()) \
            if words.is_file() else frozenset()
        out[lang] = data
    return out


def _check_concept_refs(flows: dict[str, Flow], concepts: tuple[Concept, ...]) -> None:
    known = {c.id for c in concepts}
    for flow in flows.values():
        reader = _Reader(Path(flow.path).name)
        for i, q in enumerate(flow.questions):
            for cid in (*q.answered_by, *q.answered_no_by):
                if cid not in known:
                    raise reader.fail(f"questions[{i}].answered_by", f"unknown concept {cid!r}")
            for j, opt in enumerate(q.options):
                for cid in opt.concepts:
                    if cid not in known:
                        raise reader.fail(f"questions[{i}].options[{j}].concepts",
                                          f"unknown concept {cid!r}")


REQUIRED_MESSAGES = ("greeting", "greeting_short", "menu", "menu_item", "not_understood_menu",
                     "help", "stopped", "started", "restart", "photo", "empty", "reask",
                     "unsure_taken_worse", "reask_which", "queued", "next_checklist",
                     "after_outcome", "tier",
                     "red_flag", "red_flag_after", "store_down", "already_opted_out",
                     "follow_up_generic", "something_else_label", "something_else_ask",
                     "unrecognised", "closing", "noted", "ack_reask", "question_reask", "example",
                     "why", "get_thermometer", "multi_rest", "tier_short", "too_long")
TIER_PLACEHOLDERS = {"oncology_line", "care_team", "you", "your", "are_you", "do_you",
                     "have_you", "you_have", "you_are", "You", "Your", "Are_you", "Do_you",
                     "Have_you", "You_have", "You_are"}


def _load_messages(path: Path) -> dict[str, Any]:
    reader = _Reader(path.name)
    data = reader.mapping(_yaml(path.read_text(encoding="utf-8")), "top level")
    for key in REQUIRED_MESSAGES:
        if key not in data:
            raise reader.fail(key, "is required")
    tiers = reader.mapping(data["tier"], "tier")
    for tier in TIERS:
        if tier not in tiers or not isinstance(tiers[tier], str):
            raise reader.fail(f"tier.{tier}", "is required (text)")
        _check_template(reader, tiers[tier], f"tier.{tier}", TIER_PLACEHOLDERS)
    return data


def load_library(flows_dir: str | Path) -> Library:
    base = Path(flows_dir)
    if not base.is_dir():
        raise FlowError(f"{base}: flows folder not found")
    flows: dict[str, Flow] = {}
    for path in sorted(base.glob("*.yaml")):
        if path.stem in NOT_CHECKLISTS:
            continue
        flow = load_flow(path)
        flows[flow.id] = flow
    if not flows:
        raise FlowError(f"{base}: no checklist files (*.yaml)")
    messages = _load_messages(base / "messages.yaml")
    reader = _Reader("messages.yaml")
    menu = tuple(reader.str_list(messages, "menu_order", ""))
    for i, fid in enumerate(menu):
        if fid not in flows:
            raise reader.fail(f"menu_order[{i}]", f"no checklist file {fid}.yaml")
    menu += tuple(fid for fid in flows if fid not in menu)
    red_flags = _load_red_flags(base / "red_flags.yaml")
    concepts = _load_concepts(base / "concepts.yaml", red_flags)
    _check_concept_refs(flows, concepts)
    for flow in flows.values():
        for i, fid in enumerate(flow.continue_with):
            if fid not in flows or fid == flow.id:
                raise _Reader(Path(flow.path).name).fail(f"continue_with[{i}]",
                                                         f"no other checklist {fid!r}")
    return Library(flows=flows, red_flags=red_flags, messages=messages, menu=menu,
                   concepts=concepts, languages=_load_languages(base),
                   combinations=_load_combinations(base / "concepts.yaml", concepts),
                   settled=_load_combinations(base / "concepts.yaml", concepts, "settled"),
                   windows=_load_windows(base / "windows.yaml"))


NOT_CHECKLISTS = ("red_flags", "messages", "concepts", "windows")


def _load_windows(path: Path) -> Windows:
    """``windows.yaml``: each window's ``days`` (a whole number >= 0) and ``cites``; the chemo
    window also lists the treatment phases that count as "on chemotherapy"."""
    reader = _Reader(path.name)
    if not path.exists():
        raise FlowError(f"{path.name}: missing (treatment windows are data, not code)")
    data = reader.mapping(_yaml(path.read_text(encoding="utf-8")), "")
    days: dict[str, int] = {}
    for name in ("chemo", "car_t_crs", "car_t_icans", "blinatumomab_early"):
        entry = reader.mapping(data.get(name), name)
        value = entry.get("days")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise reader.fail(f"{name}.days", "must be a whole number of days >= 0")
        if not isinstance(entry.get("cites"), str) or not entry["cites"].strip():
            raise reader.fail(f"{name}.cites", "must cite a row of docs/clinical-rules.md")
        days[name] = value
    phases = reader.str_list(data["chemo"], "phases", "chemo")
    return Windows(chemo_days=days["chemo"], chemo_phases=frozenset(phases),
                   car_t_crs_days=days["car_t_crs"], car_t_icans_days=days["car_t_icans"],
                   blinatumomab_early_days=days["blinatumomab_early"])
