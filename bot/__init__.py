"""SMS symptom triage for people with acute lymphoblastic leukemia (ALL).

``create_app(overrides)`` builds the Flask app: settings from the environment (``overrides``
win), the flows loaded and validated once, the state machine built once, Redis connected (or an
embedded redis-server started under ``instance/`` when ``REDIS_URL`` is unset).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

from . import config
from .engine import Engine
from .flows import load_library
from .service import TriageService
from .store import Store, embedded_redis_url

# E.164 numbers (+15551234567) and North American numbers written the usual ways
# (555-123-4567, (555) 123 4567, 15551234567); not record ids such as 1732300000000-0.
_PHONE_RE = re.compile(
    r"(?<![\w+-])(?:(?:\+|%2[Bb])\d[\d\s.()-]{5,18}\d|(?:1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4})(?![\w-])")


class MaskPhones(logging.Filter):
    """Defence in depth: no phone number reaches a log line, whoever wrote the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _PHONE_RE.sub(lambda m: m.group(0)[:2] + "***" + m.group(0)[-2:], message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _configure_logging(level: str) -> None:
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
    app = Flask(__name__, instance_path=settings["INSTANCE_PATH"])
    app.config.update(settings)
    _configure_logging(app.config["LOG_LEVEL"])

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

    library = load_library(app.config["FLOWS_DIR"])
    engine = Engine(library, oncology_line=app.config["ONCOLOGY_LINE_NUMBER"],
                    care_team=app.config["CARE_TEAM_NUMBER"],
                    max_body_chars=app.config["MAX_BODY_CHARS"])
    store = Store.from_url(app.config["REDIS_URL"],
                           session_ttl=app.config["SESSION_TTL_HOURS"] * 3600,
                           dedup_ttl=app.config["DEDUP_TTL_HOURS"] * 3600)
    service = TriageService(store, library, engine,
                            abandon_after_seconds=app.config["ABANDON_AFTER_MINUTES"] * 60)
    app.extensions["triage"] = service

    from flask import redirect, url_for
    from flask_wtf.csrf import CSRFProtect

    from . import api, cli, dashboard, twilio_callbacks, webhook

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
