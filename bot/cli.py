"""``flask --app wsgi <command>``: operations from the terminal.

* ``serve``  the whole service locally: web + worker, embedded Redis when REDIS_URL is unset
* ``chat``   text the service from the terminal through the real, signed webhook
* ``sweep``  turn abandoned checklists into records once (the worker does it continuously)
* ``profile set|show|fields``  the care team's patient profile
* ``diagrams``  render each checklist as a Mermaid diagram into docs/flows/
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from typing import Any
from urllib import error as urlerror
from urllib import parse, request

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from twilio.request_validator import RequestValidator


def register(app: Flask) -> None:
    app.cli.add_command(serve)
    app.cli.add_command(chat)
    app.cli.add_command(sweep)
    from .users import create_user_command

    app.cli.add_command(create_user_command)
    app.cli.add_command(profile_group)
    from .diagrams import diagrams_command

    app.cli.add_command(diagrams_command)


def signed_post(url: str, token: str, form: dict[str, str]) -> tuple[int, str]:
    """POST like Twilio does: form-encoded, with a valid X-Twilio-Signature."""
    _http_only(url)
    signature = RequestValidator(token).compute_signature(url, form)
    data = parse.urlencode(form).encode()
    req = request.Request(url, data=data, headers={"X-Twilio-Signature": signature})
    try:
        with request.urlopen(req, timeout=10) as resp:  # nosec B310 # http(s) only, checked above
            return resp.status, resp.read().decode()
    except urlerror.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _http_only(url: str) -> None:
    if parse.urlsplit(url).scheme not in ("http", "https"):
        raise click.UsageError(f"--url must be an http:// or https:// address, got {url!r}")


def reply_texts(twiml: str) -> list[str]:
    # The chat tool reads the TwiML its own service answered; expat (>= 2.4.1, as shipped
    # with Python 3.11) refuses runaway entity expansion, and no external entity is fetched.
    import xml.etree.ElementTree as ET  # nosec B405 # our own service's TwiML, see above

    try:
        root = ET.fromstring(twiml)  # nosec B314 # our own service's TwiML, see above
    except ET.ParseError:
        return [twiml]
    return ["".join(m.itertext()) for m in root.iter("Message")]


@click.command("chat")
@with_appcontext
@click.option("--phone", default="+15550100001", show_default=True, help="Pretend to be this "
              "number (use a new one for a first-contact conversation).")
@click.option("--url", default="http://127.0.0.1:5000/sms", show_default=True,
              help="The running service's webhook. If nothing answers there, the chat runs "
              "the app in this process instead (same webhook code, same signature check).")
def chat(phone: str, url: str) -> None:
    """Text the service from the terminal. Type a message, Enter to send; Ctrl-D to quit."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    token = app.config["TWILIO_AUTH_TOKEN"]
    public = app.config.get("PUBLIC_BASE_URL")
    send = _http_sender(url, token)
    if send is None:
        click.echo(f"(nothing answers at {url}: running the app in this process)")
        send = _local_sender(app, token, public)
    click.echo(f"You are {phone}. Type a message and press Enter; Ctrl-D to quit.\n")
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        form = {"From": phone, "To": "+15550009999", "Body": text,
                "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "AClocal", "NumMedia": "0"}
        status, body = send(form)
        if status != 200:
            click.echo(f"[HTTP {status}] {body[:200]}")
            continue
        texts = reply_texts(body)
        if not texts:
            click.echo("(no reply: this number has opted out; text START)")
        for t in texts:
            click.echo(f"bot> {t}\n")


def _http_sender(url: str, token: str) -> Any:
    _http_only(url)
    try:
        request.urlopen(url.rsplit("/", 1)[0] + "/healthz", timeout=2)  # nosec B310 # http(s) only
    except urlerror.HTTPError:
        pass  # it answers (503 = degraded); still the right server
    except (urlerror.URLError, OSError):
        return None
    return lambda form: signed_post(url, token, form)


def _local_sender(app: Flask, token: str, public: str | None) -> Any:
    client = app.test_client()
    base = public or "http://localhost"

    def send(form: dict[str, str]) -> tuple[int, str]:
        signature = RequestValidator(token).compute_signature(f"{base}/sms", form)
        resp = client.post("/sms", data=form, headers={"X-Twilio-Signature": signature},
                           base_url=base)
        return resp.status_code, resp.get_data(as_text=True)
    return send


@click.command("sweep")
@with_appcontext
def sweep() -> None:
    """Record abandoned checklists now."""
    written = current_app.extensions["triage"].sweep_abandoned()
    click.echo(f"{len(written)} abandoned checklist(s) recorded")


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Run the web app only.")
def serve(host: str, port: int, no_worker: bool) -> None:
    """Run the whole service locally (web + worker)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # SIGTERM and a closed terminal (SIGHUP) end the service like Ctrl-C: a normal exit, so
    # the embedded redis-server is stopped at once (its guard would stop it anyway).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    if not no_worker:
        from .worker import run_forever

        threading.Thread(target=run_forever, args=(app,), daemon=True, name="worker").start()
    embedded = " (embedded, under instance/)" if app.config.get("EMBEDDED_REDIS") else ""
    click.echo(
        f"\nTriage service on http://{host}:{port}  Redis: {app.config['REDIS_URL']}{embedded}\n"
        f"Chat with it from another terminal:\n"
        f"    .venv/bin/flask --app wsgi chat\n"
        f"Care team dashboard: http://{host}:{port}/dashboard/  (make a user first:\n"
        f"    .venv/bin/flask --app wsgi create-user NAME --role admin)\n"
        f"Health: http://{host}:{port}/healthz\n", file=sys.stderr)
    from werkzeug.serving import run_simple

    # app.run() refuses to run inside the flask command; werkzeug's server is what it wraps.
    run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)


# --------------------------------------------------------------------------- patient profiles

@click.group("profile", cls=AppGroup)
def profile_group() -> None:
    """The care team's patient profile (risk windows, age band, usual ICE score...)."""


def _show_profile(phone: str) -> None:
    from . import profile as profiles
    from .context import engine_context, risk_window

    values = profiles.get(current_app.extensions["triage"].store.r, phone)
    if not values:
        click.echo(f"{phone}: no profile (texts from this number are triaged as unregistered)")
        return
    click.echo(phone)
    for spec in profiles.FIELDS:
        if spec.name in values:
            click.echo(f"  {spec.name:<28}{values[spec.name]}")
    now = time.time()
    windows = risk_window(values, now)
    click.echo(f"  {'risk windows (rule 3)':<28}{'; '.join(windows) or 'none'}")
    facts = engine_context(values, now, windows)["facts"]
    click.echo(f"  {'context facts':<28}{', '.join(facts)}")


@profile_group.command("set")
@click.argument("phone")
@click.argument("values", nargs=-1, required=True)
def profile_set(phone: str, values: tuple[str, ...]) -> None:
    """Set fields: PHONE name=value ... (an empty value clears a field).

    Example: flask --app wsgi profile set +15551234567 car_t_date=2026-11-20 age_band=adult
    """
    from . import profile as profiles

    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{item!r}: write field=value "
                                   f"(fields: {', '.join(f.name for f in profiles.FIELDS)})")
        pairs[key.strip()] = value
    try:
        profiles.save(current_app.extensions["triage"].store.r, phone, pairs)
    except profiles.ProfileError as exc:
        raise click.ClickException("; ".join(f"{k}: {v}" for k, v in exc.errors.items())
                                   ) from exc
    _show_profile(phone)


@profile_group.command("show")
@click.argument("phone")
def profile_show(phone: str) -> None:
    """Show a patient's profile, risk windows and the context the checklists see."""
    _show_profile(phone)


@profile_group.command("fields")
def profile_fields() -> None:
    """List the fields a profile can hold."""
    from . import profile as profiles

    for spec in profiles.FIELDS:
        extra = f" ({'|'.join(spec.choices)})" if spec.choices else ""
        if spec.minimum is not None:
            extra = f" ({spec.minimum}-{spec.maximum})"
        click.echo(f"{spec.name:<28}{spec.kind}{extra}  {spec.label}")
