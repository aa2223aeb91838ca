"""SMS symptom triage for people with acute lymphoblastic leukemia (ALL).

``create_app(overrides)`` builds the Flask app: settings from the environment (``overrides``
win), the flows loaded and validated once, the state machine built once, Redis connected (or an
embedded redis-server started under ``instance/`` when ``REDIS_URL`` is unset). The rules'
version (``bot.rules_version``) is in ``app.extensions["rules_version"]``.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import redis
from flask import Flask

from . import config
from .conversation import reading, snapshot
from .conversation.engine import Engine
from .conversation.flows import load_library
from .privacy import MaskPhones, install_log_masking, mask_phone, mask_text
from .rules_version import rules_version, versioned
from .service import TriageService
from .spool import Spool
from .store import RateLimit, Store, embedded_redis_url
from .textcodec import Codec, cached_dictionary

log = logging.getLogger(__name__)

__all__ = ["MaskPhones", "create_app", "install_log_masking", "mask_phone", "mask_text"]

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
    flows_dir = app.config["FLOWS_DIR"]
    version, digest = versioned(flows_dir)
    engine_settings = {"oncology_line": app.config["ONCOLOGY_LINE_NUMBER"],
                       "care_team": app.config["CARE_TEAM_NUMBER"],
                       "max_body_chars": app.config["MAX_BODY_CHARS"],
                       "rules_version": version}

    def build() -> Engine:
        library = load_library(flows_dir)
        if rules_version(flows_dir) != version:
            raise RuntimeError(f"{flows_dir}: flow files changed while loading; start again")
        return Engine(library, **engine_settings)

    # The built engine is kept in the instance folder for the next process (start-up, issue
    # 9): loaded only for the same flow files, core code and settings, and signed.
    folder = app.config.get("ENGINE_SNAPSHOT_DIR") or app.instance_path
    engine, loaded = snapshot.cached(None if folder == "off" else folder, digest,
                                     engine_settings, app.config["SECRET_KEY"], build)
    library = engine.lib
    app.extensions["engine_snapshot"] = loaded
    app.extensions["rules_version"] = version
    app.jinja_env.globals["rules_version"] = version  # the dashboard shows what is running
    logging.getLogger(__name__).info("clinical rules %s from %s%s", version, flows_dir,
                                     " (engine snapshot)" if loaded else "")
    timeout = max(50, int(app.config.get("REDIS_TIMEOUT_MS") or 500)) / 1000
    store = Store.from_url(app.config["REDIS_URL"],
                           session_ttl=app.config["SESSION_TTL_HOURS"] * 3600,
                           dedup_ttl=app.config["DEDUP_TTL_HOURS"] * 3600,
                           socket_timeout=timeout, connect_timeout=timeout,
                           cluster=bool(app.config.get("REDIS_CLUSTER")),
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
