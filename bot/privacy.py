"""No patient data in logs: the one phone-masking helper, and the log-record masking built on it.

``mask_phone`` is what every log line, page error and console message shows of a number
(``+15551234567`` -> ``+1********67``). ``mask_text`` finds numbers in any text, however they
are written or encoded, and masks each with ``mask_phone``; ``install_log_masking`` applies it
to every log record as it is made.
"""

from __future__ import annotations

import logging
import re
from typing import Any


def mask_phone(phone: str | None) -> str:
    """For logs: never a whole number. '+15551234567' -> '+1********67'."""
    if not phone:
        return "-"
    keep_head = 2 if phone.startswith("+") else 1
    if len(phone) <= keep_head + 2:
        return "*" * len(phone)
    return phone[:keep_head] + "*" * (len(phone) - keep_head - 2) + phone[-2:]


# ------------------------------------------------------------------ no patient data in logs
#
# A log line can hold a phone number in any of the ways it travels: E.164 (+15551234567),
# written by a person (555-123-4567, (555) 123 4567, 1.555.123.4567), URL-encoded in a path
# or a query string (%2B1%20555%20123%204567, +1+555+123+4567 with form-encoded spaces,
# %28555%29...), even encoded twice (%252B). Detection runs on a decoded copy of the line
# (each escape read as the character it stands for) and masks the original span. Query-string
# values (a dashboard search q=Jane+Doe, next=..., phone=...) are redacted whatever they hold,
# except a few parameters whose values are enumerations. Record ids (1732300000000-0), dates,
# times, temperatures and IP addresses stay readable.

_ESCAPES = {"20": " ", "09": " ", "0a": " ", "0d": " ", "2b": "+", "2d": "-", "2e": ".",
            "28": "(", "29": ")"}
_ESCAPE_RE = re.compile(r"%(?:25)?(20|09|0[AaDd]|2[BbDdEe89])")
_PHONE_PATTERNS = (
    # international, with a plus sign: 8 or more digits in all
    re.compile(r"\+ ?\(?\d(?:[ .\-+()]{0,3}\d){7,}"),
    # North American: [1] (555) 123-4567 with any of the usual separators
    re.compile(r"(?<!\d)(?:1[ .\-+]{0,2})?\(?\d{3}\)?[ .\-+]{0,2}\d{3}[ .\-+]{0,2}\d{4}(?!\d|-\d)"),
    # a bare run of 10-12 digits (not a 13-digit record id such as 1732300000000-0)
    re.compile(r"(?<!\d)\d{10,12}(?!\d|-\d)"),
    # a local number without its area code: 555-0143, 555.0143
    re.compile(r"(?<![\d.\-])\d{3}[.\-]\d{4}(?![\d]|[.\-]\d)"),
)
# groups separated by spaces (or form-encoded '+'), 10-15 digits in all: 07700 900123
_SPACED_RE = re.compile(r"(?<!\d)\d{1,6}(?:[ +]{1,2}\d{1,6})+(?!\d)")
_QUERY_RE = re.compile(r"(?<=[?&])([A-Za-z0-9_.\-\[\]%]{1,64})=([^&#\s\"'<>]*)")
# Query parameters whose values are kept (they are enumerations, never patient data).
_QUERY_KEEP = frozenset({"tier", "status", "flow", "limit", "before", "action", "transcript",
                         "show", "sound"})
_ENUM_VALUE_RE = re.compile(r"^[A-Za-z0-9_.,:-]{0,40}$")


def _decoded(text: str) -> tuple[str, list[int]]:
    """The text with %-escapes of separators and '+' decoded, and for each character of it
    the offset in ``text`` where it starts (plus a final entry for the end)."""
    out: list[str] = []
    starts: list[int] = []
    pos = 0
    for m in _ESCAPE_RE.finditer(text):
        for i in range(pos, m.start()):
            out.append(text[i])
            starts.append(i)
        out.append(_ESCAPES[m.group(1).lower()])
        starts.append(m.start())
        pos = m.end()
    for i in range(pos, len(text)):
        out.append(text[i])
        starts.append(i)
    starts.append(len(text))
    return "".join(out), starts


def _redact_query(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if not value or (name.lower() in _QUERY_KEEP and _ENUM_VALUE_RE.match(value)):
            return m.group(0)
        return f"{name}=***"
    return _QUERY_RE.sub(sub, text)


def mask_text(text: str) -> str:
    """``text`` with every phone number masked (``mask_phone``) and query-string values
    redacted. Used on every log record (see ``MaskPhones``)."""
    if "=" in text and ("?" in text or "&" in text):
        text = _redact_query(text)
    if not any(c.isdigit() for c in text):
        return text
    plain, starts = _decoded(text) if "%" in text else (text, [*range(len(text) + 1)])
    spans: list[tuple[int, int]] = []
    for pattern in _PHONE_PATTERNS:
        spans.extend(m.span() for m in pattern.finditer(plain))
    for m in _SPACED_RE.finditer(plain):
        if 10 <= sum(c.isdigit() for c in m.group(0)) <= 15:
            spans.append(m.span())
    if not spans:
        return text
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out: list[str] = []
    last = 0
    for a, b in merged:
        lo, hi = starts[a], starts[b]
        original = text[lo:hi]
        out.append(text[last:lo])
        out.append(mask_phone(original))
        last = hi
    out.append(text[last:])
    return "".join(out)


def _mask_record(record: logging.LogRecord) -> None:
    if getattr(record, "_phi_masked", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging would print msg and args raw; print neither
        message = f"<unformattable log message from {record.name}>"
    masked = mask_text(message)
    if masked != message or record.args:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask_text(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info)
    record._phi_masked = True


_base_factory: Any = None


def install_log_masking() -> None:
    """Mask every log record when it is made, before any handler sees it: a handler added
    later (a test's, an error tracker's, gunicorn's) cannot print a number. Idempotent."""
    global _base_factory
    current = logging.getLogRecordFactory()
    if getattr(current, "_masks_phi", False):
        return
    _base_factory = current

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _base_factory(*args, **kwargs)
        _mask_record(record)
        return record

    factory._masks_phi = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class MaskPhones(logging.Filter):
    """Defence in depth: no phone number and no query-string value reaches a log line,
    whoever wrote the line and however it was encoded. Also installs the record factory
    that masks every record as it is made (gunicorn's logconfig_dict builds this filter
    in the master process too)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        install_log_masking()

    def filter(self, record: logging.LogRecord) -> bool:
        _mask_record(record)
        return True
