"""Patient-facing text: placeholders, and replies that fit in 3 SMS segments.

Every word a patient reads comes from ``flows/messages.yaml`` or the flow files; this module
only fills them in (the numbers to call, the person the text is about) and joins the parts
of a reply, dropping optional parts (``Opt``) that would make it longer than 3 segments.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sms import MAX_SEGMENTS, segments

PERSON_FORMS = ("you", "your", "are_you", "do_you", "have_you", "you_have", "you_are")


@dataclass(frozen=True)
class Opt:
    """An optional part of a reply: dropped if the reply would pass 3 SMS segments."""

    text: str


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


class Forms(dict[str, str]):
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
            forms = (p, f"{p}s", f"is {p}", f"does {p}", f"has {p}", f"{p} has", f"{p} is")
        self.update(zip(PERSON_FORMS, forms, strict=True))
        self.update({k.capitalize(): v[:1].upper() + v[1:]
                     for k, v in zip(PERSON_FORMS, forms, strict=True)})

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, *, oncology_line: str, care_team: str, who: str | None = None) -> str:
    """Numbers and the person the text is about: "you", "your son", "he"."""
    return text.format_map(Forms(oncology_line, care_team, who))


def short(reason: str, limit: int = 90) -> str:
    """The first words of a reason, for the patient ("Why: temperature 38.6 C >= 38.0")."""
    reason = reason.split(" (")[0] if len(reason) > limit else reason
    return reason if len(reason) <= limit else reason[: limit - 3].rsplit(" ", 1)[0] + "..."
