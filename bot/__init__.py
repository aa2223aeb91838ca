"""SMS symptom triage for people with acute lymphoblastic leukemia (ALL).

``create_app(overrides)`` builds the Flask app: settings from the environment (``overrides``
win), the flows loaded and validated once, the state machine built once, Redis connected (or an
embedded redis-server started under ``instance/`` when ``REDIS_URL`` is unset). The rules'
version (``bot.rules_version``) is in ``app.extensions["rules_version"]``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any

import redis
from flask import Flask

from . import config
from .conversation import reading
from .engine import Engine
from .flows import load_library
from .rules_version import rules_version
from .service import TriageService
from .spool import Spool
from .store import RateLimit, Store, embedded_redis_url
from .textcodec import Codec, cached_dictionary

log = logging.getLogger(__name__)

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
    """``text`` with every phone number masked (``+1***67``) and query-string values
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
        out.append(original[:2] + "***" + original[-2:])
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


def _configure_logging(level: str) -> None:
    install_log_masking()
    root = logging.getLogger()
    if not any(isinstance(f, MaskPhones) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(MaskPhones())
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    for name in ("werkzeug", "gunicorn.error", "gunicorn.access"):
        for h in logging.getLogger(name).handlers:
            if not any(isinstance(f, MaskPhones) for f in h.filters):
                h.addFilter(MaskPhones())


def _local_secrets(instance_path: str) -> dict[str, str]:
    """Local use only (no REDIS_URL): secrets made once and kept in instance/, so the chat
    tool, the web server and the worker agree without any setup."""
    path = Path(instance_path) / "dev-secrets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return json.loads(path.read_text())
    made = {"TWILIO_AUTH_TOKEN": secrets.token_hex(16), "SECRET_KEY": secrets.token_hex(32),
            "CARE_TEAM_API_TOKEN": secrets.token_urlsafe(24)}
    path.write_text(json.dumps(made, indent=2))
    path.chmod(0o600)
    return made


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    settings = config.from_environment()
    settings.update(overrides or {})
    _configure_logging(settings.get("LOG_LEVEL", "INFO"))
    # Refuse to run unsafely before anything starts (no embedded Redis, no connection).
    try:
        settings["APP_ENV"] = config.app_env(settings)
        if settings["APP_ENV"] == "production":
            config.check_production(settings)
    except config.StartupRefused as exc:
        log.critical("%s", exc)
        raise
    app = Flask(__name__, instance_path=settings["INSTANCE_PATH"])
    app.config.update(settings)

    if not app.config["REDIS_URL"]:
        app.config["REDIS_URL"] = embedded_redis_url(app.instance_path)
        app.config["EMBEDDED_REDIS"] = True
        for key, value in _local_secrets(app.instance_path).items():
            if not app.config.get(key):
                app.config[key] = value
    missing = [k for k in ("TWILIO_AUTH_TOKEN", "SECRET_KEY", "CARE_TEAM_API_TOKEN")
               if not app.config.get(k)]
    if missing:
        raise RuntimeError(f"settings missing: {', '.join(missing)} (see .env.example)")
    app.secret_key = app.config["SECRET_KEY"]

    # The reader's compiled patterns are kept in the instance folder for the next process
    # (bot/conversation/reading.py: start-up, issue 9).
    reading.PATTERN_CACHE_DIR = app.instance_path
    # The rules' version is taken from the same files the library is loaded from: hashed
    # before and after loading, so an edit saved mid-start cannot be stamped with the wrong one.
    version = rules_version(app.config["FLOWS_DIR"])
    library = load_library(app.config["FLOWS_DIR"])
    if rules_version(app.config["FLOWS_DIR"]) != version:
        raise RuntimeError(f"{app.config['FLOWS_DIR']}: flow files changed while loading; "
                           f"start again")
    app.extensions["rules_version"] = version
    app.jinja_env.globals["rules_version"] = version  # the dashboard shows what is running
    logging.getLogger(__name__).info("clinical rules %s from %s", version,
                                     app.config["FLOWS_DIR"])
    engine = Engine(library, oncology_line=app.config["ONCOLOGY_LINE_NUMBER"],
                    care_team=app.config["CARE_TEAM_NUMBER"],
                    max_body_chars=app.config["MAX_BODY_CHARS"], rules_version=version)
    timeout = max(50, int(app.config.get("REDIS_TIMEOUT_MS") or 500)) / 1000
    store = Store.from_url(app.config["REDIS_URL"],
                           session_ttl=app.config["SESSION_TTL_HOURS"] * 3600,
                           dedup_ttl=app.config["DEDUP_TTL_HOURS"] * 3600,
                           socket_timeout=timeout, connect_timeout=timeout,
                           codec=Codec(cached_dictionary(app.config["FLOWS_DIR"], version,
                                                         app.instance_path)))
    try:
        store.publish_dictionary()  # other processes decode what this one writes
    except redis.RedisError as exc:  # Redis not up yet: tried again by the first commit
        log.warning("could not publish the text dictionary yet (%s)", type(exc).__name__)
    spool_dir = app.config.get("SPOOL_DIR") or str(Path(app.instance_path) / "spool")
    service = TriageService(store, library, engine,
                            abandon_after_seconds=app.config["ABANDON_AFTER_MINUTES"] * 60,
                            spool=Spool(spool_dir),
                            rate_limit=RateLimit(app.config["RATE_LIMIT_TEXTS"],
                                                 app.config["RATE_LIMIT_WINDOW_SECONDS"]),
                            care_team=app.config["CARE_TEAM_NUMBER"])
    app.extensions["triage"] = service

    from flask import redirect, url_for
    from flask_wtf.csrf import CSRFProtect

    from . import api, cli, dashboard, twilio_callbacks, webhook
    from .dashboard import security

    # First: proxy headers, the request size cap (before anything reads a body, Twilio's
    # signature check and CSRF included) and the security headers on every response.
    security.install(app)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    # Every dashboard form carries a CSRF token; Twilio's webhook and the bearer-token API
    # are not browser forms (they are signed / token-authenticated instead).
    csrf = CSRFProtect(app)
    csrf.exempt(webhook.bp)
    csrf.exempt(api.bp)
    twilio_callbacks.register(app)  # delivery receipts, voice escalation (signed, no CSRF)
    app.add_url_rule("/", "index", lambda: redirect(url_for("dashboard.queue")))
    cli.register(app)
    return app
