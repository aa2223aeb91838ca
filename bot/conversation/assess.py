"""The tier of a conversation: every rule of every checklist over its facts, then the
combination rules of docs/clinical-rules.md (1: the highest finding wins; 2: two SOON signs
make URGENT; 3: a risk window raises SOON infection findings to URGENT, never to EMERGENCY;
7: stop asking once the tier is decided; 8: one sign counts once)."""

from __future__ import annotations

from dataclasses import dataclass

from .flows import TIER_RANK, Flow, Library, Rule, tier_max
from .session import Conversation


@dataclass
class Finding:
    tier: str
    reason: str
    cites: str
    advice: str = ""
    rule: str = ""


class Assessor:
    def __init__(self, library: Library):
        self.lib = library
        self.rules: list[tuple[Flow, Rule]] = library.all_rules()
        # Which rules a fact can make true (a rule needs one of its all/any facts), so each
        # assessment looks at the few rules the conversation's facts can reach, in rule order.
        self._by_fact: dict[str, list[int]] = {}
        self._always: list[int] = []
        for i, (_, rule) in enumerate(self.rules):
            positive = (*rule.when.all, *rule.when.any)
            if not positive:
                self._always.append(i)
            for fact in positive:
                self._by_fact.setdefault(fact, []).append(i)
        # Rule 8: which sign each fact stands for, so a headache asked in two checklists
        # counts once.
        self.fact_sign: dict[str, str] = {}
        for flow in library.flows.values():
            for q in flow.questions:
                for sf in q.sets:
                    for o in q.options:
                        if o.concepts and o.id in sf.when.any_of and len(sf.when.any_of) == 1:
                            self.fact_sign.setdefault(sf.fact, o.concepts[0])
                    if q.answered_by and sf.when.is_ == "yes":
                        self.fact_sign.setdefault(sf.fact, q.answered_by[0])

    def assess(self, conv: Conversation | None, risk_window: bool = False
               ) -> tuple[str, list[Finding]]:
        """Every rule of every checklist over the conversation's facts (so a fever reported in
        another checklist still counts), then the combination rules 1-3."""
        if conv is None:
            return "ROUTINE", []
        facts = conv.facts
        # Rule 3: the profile's windows, or an answer that set the fact ``risk_window`` (the
        # context question an unregistered number is asked, e.g. CAR-T in the last 4 weeks).
        risk = risk_window or "risk_window" in facts
        findings: list[Finding] = []
        soon_signs: set[str] = set()
        reachable = set(self._always)
        for fact in facts:
            reachable.update(self._by_fact.get(fact, ()))
        for i in sorted(reachable):
            flow, rule = self.rules[i]
            matched = rule.when.matched(facts)
            if not matched:
                continue
            raised = rule.infection and risk and rule.tier == "SOON"
            tier = "URGENT" if raised else rule.tier
            reason = reason_for(rule, conv)
            if raised:
                reason += " (in a risk window: call now)"
            # Advice written for the rule's own tier ("re-check in 1 hour") would contradict a
            # raised tier, so it is dropped.
            findings.append(Finding(tier, reason, rule.cites, "" if raised else rule.advice,
                                    f"{flow.id}.{rule.id}"))
            if tier == "SOON":
                for m in matched:
                    # the sign a finding stands for; scope facts (flow_*, ctx_*) are not signs
                    soon_signs.add("+".join(sorted(
                        self.fact_sign.get(f, f) for f in m.split("+")
                        if not f.startswith(("flow_", "ctx_"))) or [m]))
        for flag in conv.red_flags:
            findings.append(Finding("EMERGENCY", flag.reason, flag.cites, flag.advice,
                                    f"red_flags.{flag.id}"))
        tier = tier_max(*(f.tier for f in findings))
        if len(soon_signs) >= 2 and TIER_RANK[tier] < TIER_RANK["URGENT"]:
            tier = "URGENT"
            soon = "; ".join(f.reason for f in findings if f.tier == "SOON")
            findings.append(Finding("URGENT", f"two or more findings that each need a call "
                                    f"today: {soon}",
                                    "clinical-rules.md > How answers combine > rule 2"))
        return tier, findings

    def screen_done(self, conv: Conversation, flow_id: str | None) -> bool:
        """Rule 7: the checklist's EMERGENCY screen has been asked (or it has none)."""
        flow = self.lib.flows.get(flow_id or "")
        if flow is None:
            return True
        return all(q.id in conv.answers for q in flow.questions if q.screen)

    def decided(self, conv: Conversation, risk_window: bool, flow_id: str | None) -> bool:
        """Rule 7: stop asking as soon as the answer is EMERGENCY, or URGENT once the
        checklist's EMERGENCY screen has been asked."""
        tier = self.assess(conv, risk_window)[0]
        if tier == "EMERGENCY":
            return True
        return tier == "URGENT" and self.screen_done(conv, flow_id)


def reason_for(rule: Rule, conv: Conversation) -> str:
    """The rule's reason with the patient's answers filled in ("temperature {temperature}")."""
    shown = {qid: a.shown or a.text for qid, a in conv.answers.items()}
    for qid, text in conv.partial_shown.items():
        shown.setdefault(qid, text)

    class _Missing(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "?"

    return rule.reason.format_map(_Missing(shown))
