"""The dashboard's pages. Everything here runs behind ``auth.require_login``."""

from __future__ import annotations

import csv
import io
import re
import time
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

from .. import audit, escalations, profile
from ..context import risk_window
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


@bp.app_template_filter("when")
def when_filter(value: Any) -> str:
    """Unix seconds or ISO -> 'YYYY-MM-DD HH:MM:SS UTC' (the browser adds local time)."""
    try:
        ts = float(value) if not isinstance(value, str) or "T" not in value else (
            data.parse_iso(value) or 0.0)
    except (TypeError, ValueError):
        return str(value or "")
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


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

def queue_rows(f: data.Filters) -> list[dict[str, Any]]:
    store = service().store
    return data.rows(store.r, data.select(store, f), time.time(), deadline(), flow_titles())


def alarm() -> dict[str, Any]:
    """What the banner on every page says, whatever the queue's filters: EMERGENCY
    escalations nobody has acknowledged yet, and how many paged ones are past the deadline."""
    store = service().store
    recs = data.queue_order(data.unresolved(store, ("open",), data.PAGED_TIERS))
    rows = data.rows(store.r, recs, time.time(), deadline(), flow_titles())
    return {"emergencies": [{"id": x["id"], "patient": x["patient"], "age": x["age"],
                             "url": url_for("dashboard.detail", rid=x["id"])}
                            for x in rows if x["tier"] == "EMERGENCY"],
            "overdue": sum(1 for x in rows if x["overdue"])}


@bp.context_processor
def alarm_context() -> dict[str, Any]:
    return {"alarm": alarm() if g.get("user") else {"emergencies": [], "overdue": 0}}


@bp.get("/alarm.json")
def alarm_json() -> Any:
    return jsonify({"alarm": alarm(), "generated_at": data.iso(time.time())})


@bp.get("/")
def queue() -> Any:
    f = data.parse_filters(request.args, checklist_ids())
    rows = queue_rows(f)
    return render_template("dashboard/queue.html", rows=rows, f=f,
                           tiers=data.QUEUE_TIERS, statuses=tuple(data.STATUS_FILTERS),
                           checklists=checklist_ids(), titles=flow_titles(),
                           poll_seconds=current_app.config.get("DASHBOARD_POLL_SECONDS", 5))


@bp.get("/queue.json")
def queue_json() -> Any:
    f = data.parse_filters(request.args, checklist_ids())
    rows = queue_rows(f)
    for row in rows:
        row["url"] = url_for("dashboard.detail", rid=row["id"])
    return jsonify({"rows": rows, "alarm": alarm(), "errors": f.errors,
                    "generated_at": data.iso(time.time())})


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


def question_texts(rec: dict[str, Any]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for fid in rec.get("flows") or []:
        flow = service().library.flows.get(fid)
        for q in flow.questions if flow else ():
            texts.setdefault(q.id, q.ask)
    return texts


@bp.get("/escalations/<rid>")
def detail(rid: str) -> Any:
    return render_detail(rid)


def render_detail(rid: str, status: int = 200) -> Any:
    rec = load_record(rid)
    store = service().store
    whole = request.args.get("transcript") == "all"
    row = data.rows(store.r, [rec], time.time(), deadline(), flow_titles())[0]
    prof = profile.get(store.r, rec["phone"])
    audit.log(store.r, who(), "view_record", rid, f"patient {rec['phone']}")
    return render_template(
        "dashboard/detail.html", rec=rec, row=row,
        transcript=data.transcript_window(store, rec, whole=whole), whole=whole,
        questions=question_texts(rec), profile=prof, fields=profile.FIELDS,
        esc=escalations.details(store.r, rid), events=escalations.events(store.r, rid),
        windows_now=risk_window(prof, time.time()) if prof else []), status


def _act(rid: str, action: str, done: str, move: Any) -> Any:
    """Run an escalation move (acknowledge/resolve), audit it, and go back to the record;
    a move the escalation's state does not allow shows why, with 409."""
    try:
        move()
    except escalations.TransitionError as exc:
        flash(f"Not {done.lower()}: {exc}.", "error")
        return render_detail(rid, 409)
    audit.log(r(), who(), action, rid)
    flash(f"{done}.", "ok")
    return redirect(url_for("dashboard.detail", rid=rid), code=303)


@bp.post("/escalations/<rid>/ack")
def acknowledge(rid: str) -> Any:
    load_record(rid)
    return _act(rid, "ack", "Acknowledged", lambda: escalations.acknowledge(r(), rid, who()))


@bp.post("/escalations/<rid>/resolve")
def resolve(rid: str) -> Any:
    load_record(rid)
    note = (request.form.get("note") or "").strip()
    if not note:
        flash("Not resolved: write a note (what was done, who was called).", "error")
        return render_detail(rid, 400)
    if len(note) > NOTE_MAX:
        flash(f"Not resolved: the note is longer than {NOTE_MAX} characters.", "error")
        return render_detail(rid, 400)
    return _act(rid, "resolve", "Resolved", lambda: escalations.resolve(r(), rid, who(), note))


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
        if q and q not in phone and q not in prof.get("name", "").lower():
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
        elif r().sismember(profile.PATIENTS, phone):
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


@bp.get("/patients/<phone>")
def patient(phone: str) -> Any:
    _phone_or_404(phone)
    store = service().store
    prof = profile.get(store.r, phone)
    history = data.rows(store.r, store.records(phone=phone, limit=200), time.time(),
                        deadline(), flow_titles())
    if not prof and not history:
        abort(404)
    audit.log(store.r, who(), "view_patient", phone)
    return render_template("dashboard/patient.html", phone=phone, profile=prof,
                           fields=profile.FIELDS, history=history,
                           windows=risk_window(prof, time.time()) if prof else [],
                           transcript=store.transcript(phone, count=5000)[-50:])


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
    if not r().sismember(profile.PATIENTS, phone):
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
                           o=data.overview(r(), time.time(), deadline()),
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
