"""The dashboard's pages. Everything here runs behind ``auth.require_login``."""

from __future__ import annotations

import csv
import io
import re
import time
from contextlib import suppress as _suppress
from datetime import UTC, datetime
from typing import Any

from flask import (
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import audit, escalations, indexes, keys, profile, users
from ..config import clinic_zone
from ..service import TriageService
from . import bp, data
from .auth import admin_required

RID_RE = re.compile(r"^\d{1,16}-\d{1,10}$")
NOTE_MAX = 2000


def service() -> TriageService:
    return current_app.extensions["triage"]


def r() -> Any:
    return service().store.r


def deadline() -> float:
    return current_app.config["ACK_DEADLINE_MINUTES"] * 60


def flow_titles() -> dict[str, str]:
    titles = {fid: f.title for fid, f in service().library.flows.items()}
    titles["red_flag"] = "Red flag"
    return titles


def checklist_ids() -> tuple[str, ...]:
    library = service().library
    return (*library.menu, *(f for f in library.flows if f not in library.menu), "red_flag")


def who() -> str:
    return g.user.username


@bp.record_once
def _clinic_zone(state: Any) -> None:
    # An unknown zone stops the service at start-up, with the setting's name.
    state.app.config["CLINIC_TZ"] = clinic_zone(state.app.config.get("CLINIC_TIMEZONE"))


def tz() -> Any:
    return current_app.config["CLINIC_TZ"]


@bp.app_context_processor
def zone_context() -> dict[str, Any]:
    zone = current_app.config.get("CLINIC_TZ")
    return {"clinic_zone": getattr(zone, "key", str(zone or "UTC"))}


def _ts(value: Any) -> float | None:
    try:
        ts = float(value) if not isinstance(value, str) or "T" not in value else (
            data.parse_iso(value))
    except (TypeError, ValueError):
        return None
    return ts or None


@bp.app_template_filter("when")
def when_filter(value: Any) -> str:
    """Unix seconds or ISO UTC -> '2026-11-26 09:14:03 EST': the clinic's time zone, shown."""
    ts = _ts(value)
    if ts is None:
        return "" if not value else str(value)
    return data.clinic_time(ts, tz(), seconds=True)


@bp.app_template_filter("hm")
def hm_filter(value: Any) -> str:
    """Like ``when`` without the seconds."""
    ts = _ts(value)
    return data.clinic_time(ts, tz()) if ts is not None else ""


@bp.app_template_filter("iso")
def iso_filter(value: Any) -> str:
    try:
        return data.iso(float(value))
    except (TypeError, ValueError):
        return str(value or "")


@bp.errorhandler(403)
def forbidden(_exc: Any) -> Any:
    return render_template("dashboard/error.html", title="Not allowed",
                           message="This page is for admins."), 403


@bp.errorhandler(404)
def not_found(_exc: Any) -> Any:
    return render_template("dashboard/error.html", title="Not found",
                           message="There is nothing here."), 404


# --------------------------------------------------------------------------- queue

def make_rows(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return data.rows(r(), recs, time.time(), deadline(), flow_titles(), tz())


def queue_rows(f: data.Filters) -> list[dict[str, Any]]:
    rows = make_rows(data.select(service().store, f, tz=tz()))
    if f.mine:
        rows = [x for x in rows if x["assigned_to"] == who()]
    return rows


def alarm() -> dict[str, Any]:
    """What the banner on every page says, whatever the queue's filters: how many EMERGENCY
    episodes nobody has acknowledged, how long the oldest has waited, how many paged ones are
    past the deadline. One sentence, each number once."""
    rows = make_rows(data.unresolved(service().store, ("open",), data.PAGED_TIERS))
    out = data.banner(rows)
    out["url"] = (url_for("dashboard.detail", rid=out["oldest_id"]) if out["count"] == 1
                  else url_for("dashboard.queue", tier="EMERGENCY", status="open"))
    from ..worker import banner  # the worker silent > 60 s, dead-lettered records

    out["system"], letters = banner(service().store.r)
    out["deadletters_url"] = url_for("api.deadletters") if letters else ""
    return out


def updated() -> str:
    return data.clinic_time(time.time(), tz(), seconds=True)


NO_ALARM = {"count": 0, "text": "", "ids": [], "overdue": 0, "url": ""}


@bp.context_processor
def alarm_context() -> dict[str, Any]:
    return {"alarm": alarm() if g.get("user") else NO_ALARM}


@bp.get("/alarm.json")
def alarm_json() -> Any:
    return jsonify({"alarm": alarm(), "generated_at": data.iso(time.time()),
                    "updated": updated()})


@bp.get("/")
def queue() -> Any:
    f = data.parse_filters(request.args, checklist_ids())
    rows = queue_rows(f)
    return render_template("dashboard/queue.html", rows=rows, f=f,
                           tiers=data.QUEUE_TIERS, statuses=tuple(data.STATUS_FILTERS),
                           outcomes=escalations.CALL_OUTCOMES,
                           checklists=checklist_ids(), titles=flow_titles(),
                           poll_seconds=current_app.config.get("DASHBOARD_POLL_SECONDS", 5))


@bp.get("/queue.json")
def queue_json() -> Any:
    f = data.parse_filters(request.args, checklist_ids())
    rows = queue_rows(f)
    for row in rows:
        row["url"] = url_for("dashboard.detail", rid=row["id"])
    return jsonify({"rows": rows, "alarm": alarm(), "errors": f.errors, "me": who(),
                    "generated_at": data.iso(time.time()), "updated": updated()})


@bp.get("/export.csv")
def export_csv() -> Any:
    f = data.parse_filters(request.args, checklist_ids())
    rows = queue_rows(f)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(data.CSV_COLUMNS)
    for row in rows:
        writer.writerow(data.csv_row(row))
    audit.log(r(), who(), "export", "escalations", f"{len(rows)} rows; {f.describe()}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="escalations-{stamp}.csv"'})


# --------------------------------------------------------------------------- detail

def load_record(rid: str) -> dict[str, Any]:
    rec = service().store.record(rid) if RID_RE.match(rid) else None
    if rec is None:
        abort(404)
    return rec


def episode_records(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return data.episode_records(r(), rec)


def question_texts(recs: list[dict[str, Any]]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for rec in recs:
        for fid in rec.get("flows") or []:
            flow = service().library.flows.get(fid)
            for q in flow.questions if flow else ():
                texts.setdefault(q.id, q.ask)
    return texts


def colleagues() -> list[str]:
    """Every dashboard user, for assignment and hand-over."""
    store_r = r()
    return sorted(u for u in store_r.smembers(keys.of(store_r).USERS) if users.get(store_r, u))


@bp.get("/escalations/<rid>")
def detail(rid: str) -> Any:
    return render_detail(rid)


def render_detail(rid: str, status: int = 200, form: dict[str, str] | None = None) -> Any:
    rec = load_record(rid)
    store = service().store
    recs = episode_records(rec)
    whole = request.args.get("transcript") == "all"
    row = make_rows(recs)[0]
    head = next(x for x in recs if x["id"] == row["id"])
    prof = profile.get(store.r, rec["phone"])
    audit.log(store.r, who(), "view_record", rid, f"patient {rec['phone']}")
    first = min(recs, key=lambda x: data.parse_iso(x.get("started_at")) or 0)
    last = max(recs, key=lambda x: data.parse_iso(x.get("created_at")) or 0)
    window = {**last, "started_at": first.get("started_at") or first.get("created_at")}
    episode = escalations.episode_of(rec)
    ep_events = escalations.episode_events(store.r, rec["phone"], episode)
    history = [{"ts": data.parse_iso(x.get("created_at")) or 0, "at": x.get("created_at"),
                "action": f"recorded {x.get('tier')}", "who": "the service",
                "note": "; ".join(x.get("reasons") or [])} for x in recs]
    for x in recs:
        for e in escalations.events(store.r, x["id"]):
            if len(recs) > 1:
                e = {**e, "note": (e.get("note") or ""), "record": x["id"]}
            history.append(e)
    for e in ep_events:
        history.append({**e, **_episode_event_text(e)})
    history.sort(key=lambda e: float(e.get("ts") or data.parse_iso(e.get("at")) or 0))
    return render_template(
        "dashboard/detail.html", rec=head, row=row, recs=recs,
        seen=",".join(x["id"] for x in recs),
        transcript=data.transcript_window(store, window, whole=whole), whole=whole,
        questions=question_texts(recs), profile=prof, fields=profile.FIELDS,
        esc=escalations.details(store.r, row["escalation"]), history=history,
        calls=[e for e in ep_events if e.get("action") == "call"],
        notes=[e for e in ep_events if e.get("action") == "note"],
        state=escalations.episode_state(store.r, rec["phone"], episode),
        colleagues=colleagues(), outcomes=escalations.CALL_OUTCOMES,
        called=escalations.CALLED, form=form or {},
        windows_now=risk_window(prof) if prof else []), status


def _episode_event_text(e: dict[str, Any]) -> dict[str, str]:
    """How an episode event reads in the history."""
    if e.get("action") == "call":
        outcome = escalations.CALL_OUTCOMES.get(e.get("outcome", ""), e.get("outcome", ""))
        called = escalations.CALLED.get(e.get("called", ""), "")
        return {"action": f"call-back ({called}): {outcome}"}
    if e.get("action") == "assign":
        return {"action": f"assigned to {e['to']}" if e.get("to") else "unassigned"}
    if e.get("action") == "note":
        return {"action": "working note"}
    return {}


def _episode(rid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rec = load_record(rid)
    return rec, episode_records(rec)


def seen_ids(rid: str) -> set[str]:
    """The records that were on the nurse's page when she acted: the form's ``seen`` ids, and
    always the record whose page it was."""
    return {*(request.form.get("seen") or "").split(","), rid}


def unseen(recs: list[dict[str, Any]], statuses: tuple[str, ...], rid: str
           ) -> list[dict[str, Any]]:
    """Records of the episode in ``statuses`` that were not on the nurse's page when she acted:
    a finding that arrived since must be read, not swept along."""
    seen = seen_ids(rid)
    return [x for x in recs if x["id"] not in seen and x.get("status") in statuses]


def _act(rid: str, action: str, done: str, move: Any, recs: list[dict[str, Any]],
         statuses: tuple[str, ...]) -> Any:
    """Run an escalation move (acknowledge/resolve) on the episode, audit it, and go back to
    the record. A move the episode's state does not allow, or a finding that arrived after the
    page was drawn, shows why, with 409."""
    late = unseen(recs, statuses, rid)
    if late:
        flash(f"Not {done.lower()}: a new finding arrived while you were on this page "
              f"({', '.join(x.get('tier', '') for x in late)}). Read it, then act again.",
              "error")
        return render_detail(rid, 409)
    try:
        moved = move([x["id"] for x in recs])
    except escalations.TransitionError as exc:
        flash(f"Not {done.lower()}: {exc}.", "error")
        return render_detail(rid, 409)
    audit.log(r(), who(), action, rid,
              f"episode records: {', '.join(moved)}" if len(recs) > 1 else "")
    if action == "ack":
        escalations.assign_if_nobody(r(), recs[0]["phone"], escalations.episode_of(recs[0]),
                                     who())
    flash(f"{done}.", "ok")
    return redirect(url_for("dashboard.detail", rid=rid), code=303)


@bp.post("/escalations/<rid>/ack")
def acknowledge(rid: str) -> Any:
    _, recs = _episode(rid)
    return _act(rid, "ack", "Acknowledged",
                lambda ids: escalations.acknowledge(r(), ids, who()), recs,
                (escalations.OPEN,))


@bp.post("/escalations/<rid>/resolve")
def resolve(rid: str) -> Any:
    _, recs = _episode(rid)
    note = (request.form.get("note") or "").strip()
    if not note:
        flash("Not resolved: write a note (what was done, who was called).", "error")
        return render_detail(rid, 400)
    if len(note) > NOTE_MAX:
        flash(f"Not resolved: the note is longer than {NOTE_MAX} characters.", "error")
        return render_detail(rid, 400)
    return _act(rid, "resolve", "Resolved",
                lambda ids: escalations.resolve(r(), ids, who(), note), recs,
                (escalations.OPEN, escalations.ACKNOWLEDGED))


@bp.post("/escalations/<rid>/calls")
def log_call(rid: str) -> Any:
    """One call-back attempt: whom, what came of it, who called, when. Calling an episode that
    nobody had acknowledged acknowledges it (the caller is handling it) and gives it to her if
    nobody had it."""
    rec, recs = _episode(rid)
    form = {k: request.form.get(k, "") for k in ("outcome", "called", "call_note")}
    try:
        event = escalations.log_call(r(), rec["phone"], escalations.episode_of(rec), who(),
                                     form["outcome"], form["called"], form["call_note"])
    except ValueError as exc:
        flash(f"Call not logged: {exc}.", "error")
        return render_detail(rid, 400, form)
    outcome = escalations.CALL_OUTCOMES[event["outcome"]]
    audit.log(r(), who(), "call", rid, f"{outcome} ({event['called']})")
    seen = seen_ids(rid)
    open_seen = [x["id"] for x in recs if x["id"] in seen and x.get("status") == "open"]
    if open_seen:
        with _suppress(escalations.TransitionError):
            escalations.acknowledge(r(), open_seen, who())
            audit.log(r(), who(), "ack", rid, "by logging a call-back")
    escalations.assign_if_nobody(r(), rec["phone"], escalations.episode_of(rec), who())
    flash(f"Call logged: {outcome}.", "ok")
    return redirect(url_for("dashboard.detail", rid=rid, _anchor="callback"), code=303)


@bp.post("/escalations/<rid>/notes")
def add_note(rid: str) -> Any:
    rec, _ = _episode(rid)
    text = request.form.get("working_note", "")
    try:
        escalations.add_note(r(), rec["phone"], escalations.episode_of(rec), who(), text)
    except ValueError as exc:
        flash(f"Note not saved: {exc}.", "error")
        return render_detail(rid, 400, {"working_note": text})
    audit.log(r(), who(), "note", rid, f"{len(text.strip())} characters")
    flash("Note saved.", "ok")
    return redirect(url_for("dashboard.detail", rid=rid, _anchor="notes"), code=303)


@bp.post("/escalations/<rid>/assign")
def assign(rid: str) -> Any:
    """Take the episode, hand it to a colleague, or give it back (nobody)."""
    rec, _ = _episode(rid)
    to = who() if request.form.get("take") == "1" else users.normalise(request.form.get("to", ""))
    if to and users.get(r(), to) is None:
        flash(f"Not assigned: there is no user {to!r}.", "error")
        return render_detail(rid, 400)
    note = (request.form.get("handover_note") or "").strip()
    if len(note) > escalations.CALL_NOTE_MAX:
        flash(f"Not assigned: the hand-over note is longer than "
              f"{escalations.CALL_NOTE_MAX} characters.", "error")
        return render_detail(rid, 400)
    escalations.assign(r(), rec["phone"], escalations.episode_of(rec), to, who(), note)
    audit.log(r(), who(), "assign", rid, f"to {to}" if to else "unassigned")
    flash(f"Assigned to {to}." if to else "Nobody is assigned now.", "ok")
    return redirect(url_for("dashboard.detail", rid=rid), code=303)


# --------------------------------------------------------------------------- registry

def _phone_or_404(phone: str) -> str:
    if not profile.valid_phone(phone):
        abort(404)
    return phone


@bp.get("/patients")
def patients() -> Any:
    store_r = r()
    q = (request.args.get("q") or "").strip().lower()
    show = request.args.get("status") or "current"
    now = time.time()
    listed = []
    for phone in profile.all_phones(store_r):
        prof = profile.get(store_r, phone)
        status = prof.get("status", "active")
        if show == "current" and status == "discharged":
            continue
        if show in ("active", "paused", "discharged") and status != show:
            continue
        if q and q not in phone and q not in prof.get("name", "").lower() and (
                q != prof.get("mrn", "").lower()):
            continue
        listed.append({"phone": phone, "profile": prof, "status": status,
                       "windows": risk_window(prof, now)})
    listed.sort(key=lambda p: (p["profile"].get("name", "").lower(), p["phone"]))
    return render_template("dashboard/patients.html", patients=listed, q=q, show=show)


def form_values() -> dict[str, str]:
    return {f.name: request.form.get(f.name, "") for f in profile.FIELDS}


@bp.route("/patients/new", methods=["GET", "POST"])
def patient_new() -> Any:
    values: dict[str, str] = {"status": "active"}
    errors: dict[str, str] = {}
    phone = ""
    if request.method == "POST":
        phone = re.sub(r"[\s().-]", "", request.form.get("phone", ""))
        values = form_values()
        if not profile.valid_phone(phone):
            errors["phone"] = "must be a phone number like +15551234567"
        elif r().sismember(keys.of(r()).PATIENTS, phone):
            errors["phone"] = "this number is already enrolled: edit that patient instead"
        try:
            profile.clean(values)
        except profile.ProfileError as exc:
            errors.update(exc.errors)
        if not errors:
            profile.save(r(), phone, values)
            audit.log(r(), who(), "enroll", phone, _filled(values))
            flash("Patient enrolled.", "ok")
            return redirect(url_for("dashboard.patient", phone=phone), code=303)
    return render_template("dashboard/patient_form.html", phone=phone, values=values,
                           errors=errors, fields=profile.FIELDS, new=True), (
        400 if errors else 200)


def _filled(values: dict[str, str]) -> str:
    return "fields: " + ", ".join(k for k, v in values.items() if v.strip())


def patient_history(phone: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A patient's episodes (newest first) and last 50 texts."""
    store = service().store
    history = sorted(make_rows(indexes.patient_records(store.r, phone, limit=200)),
                     key=lambda x: x["created_at"], reverse=True)
    texts = store.transcript(phone, count=5000)[-50:]
    for m in texts:
        m["at_local"] = when_filter(m.get("at"))
        m["at_iso"] = data.iso(float(m["at"])) if _ts(m.get("at")) else ""
    return history, texts


@bp.get("/patients/<phone>")
def patient(phone: str) -> Any:
    _phone_or_404(phone)
    store = service().store
    prof = profile.get(store.r, phone)
    history, texts = patient_history(phone)
    if not prof and not history:
        abort(404)
    audit.log(store.r, who(), "view_patient", phone)
    return render_template("dashboard/patient.html", phone=phone, profile=prof,
                           fields=profile.FIELDS, history=history,
                           facts=data.patient_facts(prof, data.profile_today(time.time())),
                           windows=risk_window(prof) if prof else [],
                           transcript=texts)


@bp.get("/patients/<phone>/history.json")
def patient_history_json(phone: str) -> Any:
    """The patient page's live part (polled like the queue; not audited on every poll: the
    page view that started it was)."""
    _phone_or_404(phone)
    history, texts = patient_history(phone)
    for row in history:
        row["url"] = url_for("dashboard.detail", rid=row["id"])
        row["when"] = when_filter(row["created_at"])
    return jsonify({"rows": history, "texts": texts, "alarm": alarm(),
                    "generated_at": data.iso(time.time()), "updated": updated()})


@bp.route("/patients/<phone>/edit", methods=["GET", "POST"])
def patient_edit(phone: str) -> Any:
    _phone_or_404(phone)
    current = profile.get(r(), phone)
    values = {f.name: current.get(f.name, "") for f in profile.FIELDS}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = form_values()
        try:
            profile.save(r(), phone, values)
        except profile.ProfileError as exc:
            errors = exc.errors
        else:
            changed = sorted(k for k, v in values.items() if v.strip() != current.get(k, ""))
            audit.log(r(), who(), "profile_update", phone,
                      "changed: " + (", ".join(changed) or "nothing"))
            flash("Profile saved.", "ok")
            return redirect(url_for("dashboard.patient", phone=phone), code=303)
    return render_template("dashboard/patient_form.html", phone=phone, values=values,
                           errors=errors, fields=profile.FIELDS, new=False), (
        400 if errors else 200)


@bp.post("/patients/<phone>/status")
def patient_status(phone: str) -> Any:
    _phone_or_404(phone)
    status = request.form.get("status", "")
    if not r().sismember(keys.of(r()).PATIENTS, phone):
        abort(404)
    if status not in profile.BY_NAME["status"].choices:
        flash("Status not changed: choose active, paused or discharged.", "error")
        return redirect(url_for("dashboard.patient", phone=phone), code=303)
    profile.save(r(), phone, {"status": status})
    audit.log(r(), who(), "profile_status", phone, f"status={status}")
    flash(f"Patient is now {status}.", "ok")
    return redirect(url_for("dashboard.patient", phone=phone), code=303)


# --------------------------------------------------------------------------- overview, audit

@bp.get("/overview")
def overview() -> Any:
    return render_template("dashboard/overview.html",
                           o=data.overview(r(), time.time(), deadline(), tz=tz()),
                           tiers=data.QUEUE_TIERS)


@bp.get("/audit")
@admin_required
def audit_log() -> Any:
    before = request.args.get("before") or None
    if before and not RID_RE.match(before):
        before = None
    user = (request.args.get("who") or "").strip() or None
    action = request.args.get("action") or None
    target = (request.args.get("target") or "").strip() or None
    entries = audit.entries(r(), before=before, count=100, who=user, action=action,
                            target=target)
    return render_template("dashboard/audit.html", entries=entries, who=user or "",
                           action=action or "", target=target or "", actions=audit.ACTIONS,
                           more=entries[-1]["id"] if len(entries) == 100 else None)


def risk_window(profile: dict[str, str], now: float | None = None) -> list[str]:
    """The rule-3 windows a profile puts the patient in, as words (the engine's reading, with
    the window lengths of flows/windows.yaml)."""
    engine = current_app.extensions["triage"].engine
    return list(engine.patient_context(profile, time.time() if now is None else now)
                ["risk_windows"])
