"""``flask --app wsgi <command>``: operations from the terminal.

* ``serve``  the whole service locally: web + worker, embedded Redis when REDIS_URL is unset
* ``chat``   text the service from the terminal through the real, signed webhook
* ``sweep``  turn abandoned checklists into records once (the worker does it continuously)
* ``profile set|show|fields``  the care team's patient profile
* ``diagrams``  render each checklist as a Mermaid diagram into docs/flows/
* ``vignettes [FILE...]``  run the vignette suite (or a reviewer's own file) through the real
  signed webhook against a throwaway Redis; the table per checklist and every failure
"""

from __future__ import annotations

import json
import signal
import socket
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
    from .vignettes import vignettes_command

    app.cli.add_command(vignettes_command)


def signed_post(url: str, token: str, form: dict[str, str], signed_url: str | None = None
                ) -> tuple[int, str]:
    """POST like Twilio does: form-encoded, with a valid X-Twilio-Signature (computed over
    ``signed_url``, the address Twilio would have called, when the server sits behind one)."""
    _http_only(url)
    signature = RequestValidator(token).compute_signature(signed_url or url, form)
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
    send = _http_sender(url, token, public)
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
        try:
            status, body = send(form)
        except OSError as exc:  # URLError too: the server went away mid-chat
            raise click.ClickException(f"nothing answers at {url} any more ({_why(exc)}); "
                                       f"is the server still running?") from exc
        if status != 200:
            raise click.ClickException(explain_status(status, url))
        texts = reply_texts(body)
        if not texts:
            click.echo("(no reply: this number has opted out; text START)")
        for t in texts:
            click.echo(f"bot> {t}\n")


def explain_status(status: int, url: str) -> str:
    """One line for a refused chat message, instead of the server's HTML page."""
    if status == 403:
        return (f"HTTP 403 from {url}: the service refused the signature. Its "
                f"TWILIO_AUTH_TOKEN (or PUBLIC_BASE_URL) is not this chat's: run chat with "
                f"the server's settings (same folder or INSTANCE_PATH, same environment).")
    if status in (404, 405, 501):
        return (f"HTTP {status} from {url}: that is not this triage service's webhook "
                f"(wrong server, port or path?); give the right one with --url.")
    return f"HTTP {status} from {url}: the service could not take the message; see its log."


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return getattr(reason, "strerror", None) or str(reason)


def _http_sender(url: str, token: str, public: str | None = None) -> Any:
    """A sender to the server at ``url``; None when nothing answers there. Something that
    answers but is not this service (its /healthz is not ours) stops the chat with one line."""
    _http_only(url)
    health = url.rsplit("/", 1)[0] + "/healthz"
    try:
        with request.urlopen(health, timeout=2) as resp:  # nosec B310 # http(s) only
            status, body = resp.status, resp.read(2000)
    except urlerror.HTTPError as exc:
        status, body = exc.code, exc.read(2000)
    except (urlerror.URLError, OSError):
        return None
    try:
        ours = status in (200, 503) and "redis" in json.loads(body)
    except (ValueError, TypeError):
        ours = False
    if not ours:
        raise click.ClickException(
            f"{health} answers HTTP {status}, but not as this triage service: wrong server "
            f"or port? Give the service's webhook with --url http://HOST:PORT/sms.")
    # The server checks the signature against PUBLIC_BASE_URL when it has one.
    signed = f"{public}{parse.urlsplit(url).path}" if public else None
    return lambda form: signed_post(url, token, form, signed)


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
    busy = port_in_use(host, port)
    if busy:
        raise click.ClickException(
            f"port {port} on {host} is already in use ({busy}): is another `serve` still "
            f"running? Stop it, or choose another port: make run PORT={port + 1} "
            f"(or flask --app wsgi serve --port {port + 1}).")
    # SIGTERM and a closed terminal (SIGHUP) end the service like Ctrl-C: a normal exit, so
    # the embedded redis-server is stopped at once (its guard would stop it anyway).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    if not no_worker:
        from .worker import run_forever

        ready = threading.Event()
        threading.Thread(target=run_forever, args=(app,), kwargs={"ready": ready}, daemon=True,
                         name="worker").start()
        # the first tick before the first request: /healthz is "ok" from its first answer
        # instead of "degraded: worker_silent" for the few milliseconds before it (a race
        # that made the install check fail once)
        ready.wait(10)
    embedded = " (embedded, under instance/)" if app.config.get("EMBEDDED_REDIS") else ""
    chat_cmd = ".venv/bin/flask --app wsgi chat"
    if (host, port) != ("127.0.0.1", 5000):
        chat_cmd += f" --url http://{host}:{port}/sms"
    click.echo(
        f"\nTriage service on http://{host}:{port}  Redis: {app.config['REDIS_URL']}{embedded}\n"
        f"Rules: {app.extensions.get('rules_version')}\n"
        f"Chat with it from another terminal:\n"
        f"    {chat_cmd}\n"
        f"Care team dashboard: http://{host}:{port}/dashboard/  (make a user first:\n"
        f"    .venv/bin/flask --app wsgi create-user NAME --role admin)\n"
        f"Health: http://{host}:{port}/healthz\n", file=sys.stderr)
    from werkzeug.serving import run_simple

    # app.run() refuses to run inside the flask command; werkzeug's server is what it wraps.
    run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)


def port_in_use(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None. Binds the way werkzeug's server
    does (SO_REUSEADDR), so a port left in TIME_WAIT is not reported busy."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


# --------------------------------------------------------------------------- patient profiles

@click.group("profile", cls=AppGroup)
def profile_group() -> None:
    """The care team's patient profile (risk windows, age band, usual ICE score...)."""


def _show_profile(phone: str) -> None:
    from . import profile as profiles

    values = profiles.get(current_app.extensions["triage"].store.r, phone)
    if not values:
        click.echo(f"{phone}: no profile (texts from this number are triaged as unregistered)")
        return
    click.echo(phone)
    for spec in profiles.FIELDS:
        if spec.name in values:
            click.echo(f"  {spec.name:<28}{values[spec.name]}")
    now = time.time()
    context = current_app.extensions["triage"].engine.patient_context(values, now)
    click.echo(f"  {'risk windows (rule 3)':<28}{'; '.join(context['risk_windows']) or 'none'}")
    facts = context["ctx"]["facts"]
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
