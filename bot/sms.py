"""SMS economy: the GSM-7 character set and segment counting (3GPP TS 23.038).

One character outside GSM-7 (a curly quote, an emoji) switches the whole message to UCS-2,
70 characters a segment instead of 160; so every message the service sends is checked here.
"""

from __future__ import annotations

import unicodedata

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Characters of the extension table: each costs two septets (escape + char).
GSM7_EXTENDED = set("^{}\\[~]|€\f")

MAX_SEGMENTS = 3

# What patients' phones put in: map it to plain GSM-7 before we ever echo it back.
_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...",
    "\u00a0": " ", "\u00b0": " degrees ", "\u00ba": " degrees ",
}


_GSM7_ALL = frozenset(GSM7_BASIC) | frozenset(GSM7_EXTENDED)


def is_gsm7(text: str) -> bool:
    return _GSM7_ALL.issuperset(text)


def non_gsm7(text: str) -> list[str]:
    return sorted({ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENDED})


def septets(text: str) -> int:
    """One septet a character, two for the extension table's (an escape and the character)."""
    return len(text) + sum(text.count(ch) for ch in _EXTENDED_CHARS)


_EXTENDED_CHARS = tuple(GSM7_EXTENDED)


def segments(text: str) -> int:
    """Number of SMS segments the text costs (UCS-2 if any character is not GSM-7)."""
    if is_gsm7(text):
        n = septets(text)
        single, multi = 160, 153
    else:
        n = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if n <= single:
        return 1
    return -(-n // multi)


def to_gsm7(text: str) -> str:
    """Best-effort conversion of arbitrary text to GSM-7 (used for anything we echo back)."""
    if _GSM7_ALL.issuperset(text):  # every reply the flows write: nothing to convert
        return text
    out = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENDED:
            out.append(ch)
            continue
        if ch in _REPLACEMENTS:
            out.append(_REPLACEMENTS[ch])
            continue
        decomposed = unicodedata.normalize("NFKD", ch)
        base = "".join(c for c in decomposed if c in GSM7_BASIC)
        out.append(base if base else "?")
    return "".join(out)
