"""What the dashboard shows, computed from the store: the queue's rows, the filters, the
overview's numbers and its SVG chart. No Flask here, so tests can call it on known data."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import redis

from .. import escalations, indexes, keys
from ..clock import iso_utc as iso
from ..conversation.flows import TIERS
from ..profile import valid_phone
from ..store import Store, decode_record, profile_key

QUEUE_TIERS = ("EMERGENCY", "URGENT", "SOON", "ROUTINE")  # display order, most urgent first
TIER_ORDER = {t: i for i, t in enumerate(QUEUE_TIERS)}
DEFAULT_TIERS = ("EMERGENCY", "URGENT", "SOON")  # ROUTINE only when asked for
PAGED_TIERS = ("EMERGENCY", "URGENT")  # clinical-rules.md: paged, acknowledge within 15 min
STATUS_FILTERS = {
    "active": ("open", "acknowledged"),  # the default: everything not yet resolved
    "open": ("open",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": (None,),
}
STATUS_ORDER = {"open": 0, "acknowledged": 1, "resolved": 2}
MAX_ROWS = 2000  # per status scanned; far above a night's queue
TRANSCRIPT_BEFORE = 1  # second before the conversation's start (stored to the second)
TRANSCRIPT_AFTER = 15 * 60  # seconds after the record: the reply and what came right after
ISO = "%Y-%m-%dT%H:%M:%SZ"


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, ISO).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def age_text(seconds: float) -> str:
    """'just now', '12 min ago', '3 h 5 min ago', '2 days ago'."""
    s = max(0, int(seconds))
    if s < 60:
        return "just now"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    days = hours // 24
    return "1 day ago" if days == 1 else f"{days} days ago"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


# --------------------------------------------------------------------------- filters

@dataclass
class Filters:
    tiers: tuple[str, ...] = DEFAULT_TIERS
    status: str = "active"
    flow: str = ""
    date_from: date | None = None
    date_to: date | None = None
    mine: bool = False  # only episodes assigned to the signed-in user
    errors: dict[str, str] = field(default_factory=dict)

    def args(self) -> list[tuple[str, str]]:
        """As query parameters (for the export link and the poll)."""
        out = [("tier", t) for t in self.tiers]
        out.append(("status", self.status))
        if self.flow:
            out.append(("flow", self.flow))
        if self.date_from:
            out.append(("from", self.date_from.isoformat()))
        if self.date_to:
            out.append(("to", self.date_to.isoformat()))
        if self.mine:
            out.append(("mine", "1"))
        return out

    def describe(self) -> str:
        parts = [f"tier={','.join(self.tiers)}", f"status={self.status}"]
        if self.flow:
            parts.append(f"flow={self.flow}")
        if self.date_from:
            parts.append(f"from={self.date_from}")
        if self.date_to:
            parts.append(f"to={self.date_to}")
        if self.mine:
            parts.append("mine")
        return " ".join(parts)


def parse_filters(args: Any, flows: tuple[str, ...]) -> Filters:
    """From a request's query string. Bad values fall back to the default, with a message
    (a nurse's typo must never empty the queue silently)."""
    f = Filters()
    tiers = tuple(t for t in QUEUE_TIERS if t in {x.upper() for x in args.getlist("tier")})
    if tiers:
        f.tiers = tiers
    status = args.get("status") or "active"
    if status in STATUS_FILTERS:
        f.status = status
    else:
        f.errors["status"] = f"unknown status {status!r}"
    flow = args.get("flow") or ""
    if flow and flow not in flows:
        f.errors["flow"] = f"unknown checklist {flow!r}"
    else:
        f.flow = flow
    f.mine = args.get("mine") in ("1", "on", "yes")
    for name, attr in (("from", "date_from"), ("to", "date_to")):
        raw = (args.get(name) or "").strip()
        if raw:
            try:
                setattr(f, attr, date.fromisoformat(raw))
            except ValueError:
                f.errors[name] = "must be a date like 2026-11-24"
    return f


def unresolved(store: Store, statuses: tuple[str, ...], tiers: tuple[str, ...] = ()
               ) -> list[dict[str, Any]]:
    """Records whose status is one of ``statuses`` (not 'resolved'), found through the open
    queue index (``bot/indexes.py``) and the records not indexed yet: a poll every few seconds
    costs what is open, never the history of the records stream. ROUTINE records are never in
    the open queue; asked for, the latest ``indexes.ROUTINE_KEEP`` of them are shown."""
    return indexes.unresolved(store.r, statuses, tiers)


def select(store: Store, f: Filters, limit: int = MAX_ROWS, tz: tzinfo = UTC
           ) -> list[dict[str, Any]]:
    """Records matching the filters (dates are the clinic's days), in queue order."""
    found: list[dict[str, Any]] = []
    statuses = STATUS_FILTERS[f.status]
    if None in statuses or "resolved" in statuses:
        for status in statuses:
            found.extend(store.records(tiers=f.tiers, status=status, limit=limit))
    else:
        found = unresolved(store, statuses, f.tiers)
    out = []
    for rec in found:
        if f.flow and f.flow != rec.get("flow") and f.flow not in (rec.get("flows") or []):
            continue
        created = parse_iso(rec.get("created_at"))
        day = datetime.fromtimestamp(created, tz).date() if created is not None else None
        if f.date_from and (day is None or day < f.date_from):
            continue
        if f.date_to and (day is None or day > f.date_to):
            continue
        out.append(rec)
    return queue_order(out)


def queue_order(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EMERGENCY, URGENT, SOON, ROUTINE; within a tier, what still needs someone (open) before
    what someone has (acknowledged); then oldest first: the longest wait is the most urgent."""
    return sorted(recs, key=lambda r: (TIER_ORDER.get(r.get("tier", ""), 9),
                                       STATUS_ORDER.get(r.get("status", ""), 9),
                                       parse_iso(r.get("created_at")) or 0, r["id"]))


# --------------------------------------------------------------------------- rows

def is_overdue(rec: dict[str, Any], esc: dict[str, str], now: float, deadline: float) -> bool:
    """The paging worker's flag, or (without waiting for it) an EMERGENCY/URGENT still open
    past the acknowledgement deadline (clinical-rules.md rule 5)."""
    if esc.get("overdue") == "1":
        return True
    created = parse_iso(rec.get("created_at"))
    return (rec.get("tier") in PAGED_TIERS and rec.get("status") == "open"
            and created is not None and now - created > deadline)


def clinic_time(ts: float | None, tz: tzinfo, seconds: bool = False) -> str:
    """'2026-11-26 09:14 EST': a time in the clinic's zone, the zone beside it."""
    if ts is None:
        return ""
    local = datetime.fromtimestamp(ts, tz)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def clinic_today(now: float, tz: tzinfo) -> date:
    return datetime.fromtimestamp(now, tz).date()


def profile_today(now: float) -> date:
    """The day "days since chemo / CAR-T" counts from: the same (UTC) day as the risk windows
    of ``context.risk_window``, so the row never says "chemo day 8" beside "chemotherapy 9
    days ago". (When the core counts risk windows in the clinic's days, this follows.)"""
    return datetime.fromtimestamp(now, UTC).date()


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def years_between(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def patient_facts(prof: dict[str, str], today: date) -> dict[str, Any]:
    """What the queue row says about the patient, from the profile: age (and band), phase,
    days since the last chemotherapy / CAR T-cell infusion / blinatumomab cycle start,
    caregiver, MRN. ``since`` lists only what the profile knows ("day 0" is the day itself;
    a date in the future is shown as such, never as a negative day)."""
    born = _date(prof.get("date_of_birth"))
    age = years_between(born, today) if born else None
    since = []
    for key, label in (("last_chemo_date", "chemo"), ("car_t_date", "CAR-T"),
                         ("blinatumomab_start_date", "blinatumomab start")):
        day = _date(prof.get(key))
        if day is None:
            continue
        n = (today - day).days
        since.append({"what": label, "days": n,
                      "text": f"{label} day {n}" if n >= 0 else
                      f"{label} in {-n} day{'s' if n < -1 else ''}"})
    relationship = (prof.get("caregiver_relationship") or "").replace("_", " ")
    caregiver = prof.get("caregiver_name") or ""
    if caregiver and relationship:
        caregiver = f"{caregiver} ({relationship})"
    elif relationship:
        caregiver = f"({relationship}, name not recorded)"
    return {
        "age_years": age,
        "age_band": prof.get("age_band", ""),
        "patient_age": ", ".join(x for x in (f"{age} y" if age is not None else "",
                                           prof.get("age_band", "")) if x),
        "phase": (prof.get("treatment_phase") or "").replace("_", " "),
        "since": since,
        "caregiver": caregiver,
        "caregiver_phone": prof.get("caregiver_phone", ""),
        "mrn": prof.get("mrn", ""),
        "mrn_text": _mrn_text(prof.get("mrn", "")),
    }


def _mrn_text(mrn: str) -> str:
    """'MRN 004512', or the number as it is when it already says MRN."""
    if not mrn:
        return ""
    return mrn if mrn.upper().startswith("MRN") else f"MRN {mrn}"


def words_for(reason: str, recs: list[dict[str, Any]]) -> str:
    """The patient's own words behind a reason, when a record says so (``quotes``)."""
    for rec in recs:
        quotes = rec.get("quotes")
        if isinstance(quotes, dict) and quotes.get(reason):
            return str(quotes[reason])
    return ""


EPISODE_LOOKBACK = 24 * 3600  # an episode's records: from a day before its conversation began


def episode_records(r: redis.Redis, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every record of ``rec``'s episode (same number, same episode), oldest first, with its
    status. Stream ids are the time of writing, so only the records written since a day before
    the conversation began are read, not the whole history."""
    episode = escalations.episode_of(rec)
    start = parse_iso(rec.get("started_at")) or parse_iso(rec.get("created_at")) or 0
    low = max(0, int((start - EPISODE_LOOKBACK) * 1000))
    found = []
    phone = rec.get("phone", "")
    for rid, fields in r.xrange(keys.of(r).RECORDS, min=str(low), max="+"):
        try:
            other = {"id": rid, **decode_record(fields)}
        except (KeyError, TypeError, ValueError):
            continue  # unreadable: the dead letters show it (paging.py)
        if other.get("phone") == phone and escalations.episode_of(other) == episode:
            found.append(other)
    if not any(x["id"] == rec["id"] for x in found):
        found.append(dict(rec))
    found.sort(key=lambda x: x["id"])
    statuses = r.hmget(keys.of(r).STATUS, [x["id"] for x in found])
    for x, st in zip(found, statuses, strict=True):
        x["status"] = st or x.get("status", "open")
    return found


def group_episodes(recs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records of one patient episode (same phone and episode/conversation id) together,
    each group most urgent record first (then the oldest)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in recs:
        groups.setdefault((rec.get("phone", ""), escalations.episode_of(rec)), []).append(rec)
    return [sorted(g, key=lambda r: (TIER_ORDER.get(r.get("tier", ""), 9),
                                     parse_iso(r.get("created_at")) or 0, r["id"]))
            for g in groups.values()]


def rows(r: redis.Redis, recs: list[dict[str, Any]], now: float, deadline: float,
         flow_titles: dict[str, str], tz: tzinfo = UTC) -> list[dict[str, Any]]:
    """Everything one line of the queue (HTML, JSON, CSV) shows: one line per patient episode
    (the records of one conversation), its tier the highest, its reasons merged, in queue
    order."""
    groups = group_episodes(recs)
    names = keys.of(r)
    pipe = r.pipeline(transaction=False)
    phones = sorted({rec.get("phone", "") for rec in recs})
    for rec in recs:
        pipe.hgetall(names.esc_key(rec["id"]))
    for phone in phones:
        pipe.hgetall(profile_key(phone))
    for group in groups:
        phone, episode = group[0].get("phone", ""), escalations.episode_of(group[0])
        pipe.hgetall(names.episode_key(phone, episode))
        pipe.lrange(names.episode_events_key(phone, episode), 0, -1)
    results = pipe.execute()
    escs = {rec["id"]: esc for rec, esc in zip(recs, results[: len(recs)], strict=True)}
    profiles = dict(zip(phones, results[len(recs): len(recs) + len(phones)], strict=True))
    episode_data = results[len(recs) + len(phones):]
    today = profile_today(now)
    out = []
    for i, group in enumerate(groups):
        state, raw_events = episode_data[2 * i], episode_data[2 * i + 1]
        out.append(_episode_row(group, escs, profiles, state, raw_events, now, deadline,
                                flow_titles, today, tz))
    return queue_order(out)


def _episode_row(group: list[dict[str, Any]], escs: dict[str, dict[str, str]],
                 profiles: dict[str, dict[str, str]], state: dict[str, str],
                 raw_events: list[str], now: float, deadline: float,
                 flow_titles: dict[str, str], today: date, tz: tzinfo) -> dict[str, Any]:
    head = group[0]  # the most urgent record: its tier is the episode's
    phone = head.get("phone", "")
    prof = profiles.get(phone) or {}
    created = min((parse_iso(rec.get("created_at")) or now) for rec in group)
    status = min((rec.get("status", "open") for rec in group),
                 key=lambda s: STATUS_ORDER.get(s, 9))
    flows: list[str] = []
    reasons: list[str] = []
    answers: dict[str, str] = {}
    for rec in sorted(group, key=lambda r: r["id"]):  # oldest first: later answers win
        answers.update({str(k): str(v) for k, v in (rec.get("answers") or {}).items()})
    for rec in group:
        for f in rec.get("flows") or ([rec["flow"]] if rec.get("flow") else []):
            if f not in flows:
                flows.append(f)
        for reason in rec.get("reasons") or []:
            if reason not in reasons:
                reasons.append(reason)
    quoted = [{"reason": reason, "words": words_for(reason, group)} for reason in reasons]
    esc_list = [escs.get(rec["id"]) or {} for rec in group]
    head_esc = escalation_of(group, esc_list)
    acked = next((e for e in esc_list if e.get("acknowledged_by")), {})
    resolved = next((e for e in esc_list if e.get("resolved_by")), {})
    events = [json.loads(e) for e in raw_events]
    calls = [e for e in events if e.get("action") == "call"]
    last_call = calls[-1] if calls else None
    facts = patient_facts(prof, today)
    name = prof.get("name", "")
    return {
        "id": head["id"],
        "ids": [rec["id"] for rec in sorted(group, key=lambda r: r["id"])],
        "episode": escalations.episode_of(head),
        "tier": head.get("tier", ""),
        "status": status,
        "kind": head.get("kind", ""),
        "incomplete": any(rec.get("kind") == "abandoned" for rec in group),
        "created_at": iso(created),
        "created_local": clinic_time(created, tz),
        "age": age_text(now - created),
        "age_seconds": int(now - created),
        "phone": phone,
        "tel": f"tel:{phone}" if valid_phone(phone) else "",
        "name": name,
        "patient": name or phone,
        "patient_status": prof.get("status", ""),
        "registered": bool(prof.get("status")),  # profile.save always sets a status
        **facts,
        "caregiver_tel": (f"tel:{facts['caregiver_phone']}"
                          if valid_phone(facts["caregiver_phone"]) else ""),
        "flow": head.get("flow", ""),
        "checklist": ", ".join(flow_titles.get(f, f) for f in flows) or "red flag",
        "reasons": reasons,
        "quoted": quoted,
        "answers": answers,
        "risk_window_assumed": any(bool(rec.get("risk_window_assumed")) for rec in group),
        "risk_windows": list(head.get("risk_windows") or []),
        "escalation": head_esc.get("id", head["id"]),
        "raised_from": head_esc.get("raised_from", ""),
        "page_status": head_esc.get("page_status", ""),
        "page_attempts": head_esc.get("page_attempts", ""),
        "page_error": head_esc.get("page_error", ""),
        "overdue": any(is_overdue(rec, esc, now, deadline)
                       for rec, esc in zip(group, esc_list, strict=True)),
        "acknowledged_by": acked.get("acknowledged_by", ""),
        "acknowledged_at": _iso_or_blank(acked.get("acknowledged_at")),
        "resolved_by": resolved.get("resolved_by", ""),
        "resolved_at": _iso_or_blank(resolved.get("resolved_at")),
        "resolved_note": resolved.get("resolved_note", ""),
        "assigned_to": state.get("assigned_to", ""),
        "calls": len(calls),
        "last_call": (f"{escalations.CALL_OUTCOMES.get(last_call.get('outcome', ''), '?')}, "
                      f"{clinic_time(last_call.get('ts'), tz)} by {last_call.get('who', '')}"
                      if last_call else ""),
        "notes": sum(1 for e in events if e.get("action") == "note"),
    }


def escalation_of(group: list[dict[str, Any]], esc_list: list[dict[str, str]]
                  ) -> dict[str, str]:
    """The escalation hash the episode's row shows (paging status, raised from): the record
    the others were merged into (one open escalation per conversation, raised in place;
    ``paging.py``), else the most urgent record's. With ``id``."""
    by_id = {rec["id"]: esc for rec, esc in zip(group, esc_list, strict=True)}
    head_id = group[0]["id"]
    holder = by_id[head_id].get("merged_into") or ""
    if holder in by_id:
        return {**by_id[holder], "id": holder}
    return {**by_id[head_id], "id": head_id}


def _iso_or_blank(value: str | None) -> str:
    try:
        return iso(float(value)) if value else ""
    except ValueError:
        return ""


def banner(rows_: list[dict[str, Any]]) -> dict[str, Any]:
    """The alarm banner, from the unacknowledged paged rows: one sentence with each number
    once ('3 EMERGENCY waiting, oldest 6 min'), never a list of patients."""
    ems = [x for x in rows_ if x["tier"] == "EMERGENCY" and x["status"] == "open"]
    oldest = max(ems, key=lambda x: x["age_seconds"]) if ems else None
    text = ""
    if oldest is not None:
        wait = ("under 1 min" if oldest["age_seconds"] < 60
                else age_text(oldest["age_seconds"]).removesuffix(" ago"))
        text = f"{len(ems)} EMERGENCY waiting, oldest {wait}"
    return {"count": len(ems), "text": text, "ids": [i for x in ems for i in x["ids"]],
            "oldest_id": oldest["id"] if oldest else "",
            "oldest_patient": oldest["patient"] if oldest else "",
            "overdue": sum(1 for x in rows_ if x["overdue"] and x["status"] == "open")}


# --------------------------------------------------------------------------- CSV

CSV_COLUMNS = ("id", "ids", "created_at", "created_local", "tier", "status", "patient", "phone",
               "mrn", "checklist", "kind", "reasons", "overdue", "page_status", "page_attempts",
               "page_error", "assigned_to", "calls", "last_call", "acknowledged_by",
               "acknowledged_at", "resolved_by", "resolved_at", "resolved_note")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A spreadsheet must never run a cell as a formula (OWASP CSV injection): a text that
    starts with = + - @ (or a tab / carriage return) gets a leading apostrophe."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = "; ".join(str(v) for v in value)
    else:
        text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(row: dict[str, Any]) -> list[str]:
    return [csv_cell(row.get(c)) for c in CSV_COLUMNS]


# --------------------------------------------------------------------------- transcript

def transcript_window(store: Store, rec: dict[str, Any], whole: bool = False
                      ) -> list[dict[str, Any]]:
    """The patient's texts around this record: from the conversation's start to a little
    after the record (``whole``: the last 300 texts of this number)."""
    messages = store.transcript(rec.get("phone", ""), count=5000)
    if whole:
        return messages[-300:]
    start = (parse_iso(rec.get("started_at")) or parse_iso(rec.get("created_at")) or 0)
    end = (parse_iso(rec.get("created_at")) or start) + TRANSCRIPT_AFTER
    start -= TRANSCRIPT_BEFORE
    out = []
    for m in messages:
        try:
            at = float(m.get("at", ""))
        except ValueError:
            continue
        if start <= at <= end:
            out.append({**m, "at_iso": iso(at)})
    return out


# --------------------------------------------------------------------------- overview

def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def overview(r: redis.Redis, now: float, deadline: float, days: int = 30,
             tz: tzinfo = UTC) -> dict[str, Any]:
    """Escalations per day by tier over the last ``days`` days (the clinic's days, today
    included), time to acknowledge, overdue counts."""
    today = datetime.fromtimestamp(now, tz).date()
    first = today - timedelta(days=days - 1)
    day_list = [first + timedelta(days=i) for i in range(days)]
    edges = [datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() for d in day_list]
    first_ts = edges[0]
    # Counts from the per-tier time index, escalations from the open / acted indexes and
    # the records not indexed yet: the cost of the window, not of the history.
    facts = indexes.overview_facts(r, first_ts, now, [*edges, now])

    per_day = {d: dict.fromkeys(TIERS, 0) for d in day_list}
    for tier in TIERS:
        for d, n in zip(day_list, facts["counts"].get(tier, []), strict=True):
            per_day[d][tier] = n
    totals = {tier: sum(c[tier] for c in per_day.values()) for tier in TIERS}
    ack: dict[str, list[float]] = {t: [] for t in QUEUE_TIERS}
    waiting = dict.fromkeys(QUEUE_TIERS, 0)
    overdue_total = overdue_open = 0
    for tier, created, first_action, flag, status in facts["escalations"]:
        if first_action is not None:
            ack[tier].append(max(0.0, first_action - created))
        else:
            waiting[tier] += 1
        if tier in PAGED_TIERS:
            late = (flag
                    or (first_action is not None and first_action - created > deadline)
                    or (first_action is None and now - created > deadline))
            overdue_total += late
            overdue_open += late and status == "open"
    escalated = [t for t in QUEUE_TIERS if t != "ROUTINE"]
    all_times = [x for t in escalated for x in ack[t]]
    stats = [_ack_stats(t, ack[t], waiting[t]) for t in escalated]
    stats.append(_ack_stats("all escalations", all_times, sum(waiting.values())))
    day_rows = [{"day": d, "counts": c, "total": sum(c.values())} for d, c in per_day.items()]
    return {"first": first, "today": today, "days": day_rows, "totals": totals,
            "ack": stats, "overdue_total": overdue_total, "overdue_open": overdue_open,
            "deadline_minutes": int(deadline // 60), "chart": chart(day_rows)}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _ack_stats(label: str, times: list[float], waiting: int) -> dict[str, Any]:
    median = statistics.median(times) if times else None
    p90 = percentile(times, 90)
    return {"label": label, "n": len(times), "waiting": waiting, "median": median, "p90": p90,
            "median_text": duration_text(median), "p90_text": duration_text(p90)}


# --------------------------------------------------------------------------- SVG chart

CHART_W, CHART_H = 900, 280
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 14, 40
STACK = ("EMERGENCY", "URGENT", "SOON", "ROUTINE")  # bottom to top


def _nice_max(value: int) -> tuple[int, int]:
    """An axis maximum and step with about four round ticks."""
    if value <= 4:
        return 4, 1
    raw = value / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return int(math.ceil(value / step) * step), int(step)


def chart(day_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Geometry of a stacked bar chart (one bar per day, one segment per tier), drawn by the
    template as inline SVG: no script, no library, nothing fetched."""
    top, step = _nice_max(max((d["total"] for d in day_rows), default=0))
    plot_w = CHART_W - PAD_L - PAD_R
    plot_h = CHART_H - PAD_T - PAD_B
    slot = plot_w / max(1, len(day_rows))
    bar_w = max(2.0, slot * 0.7)
    bars, labels = [], []
    for i, d in enumerate(day_rows):
        x = PAD_L + i * slot + (slot - bar_w) / 2
        y = PAD_T + plot_h
        for tier in STACK:
            n = d["counts"][tier]
            if not n:
                continue
            h = n / top * plot_h
            y -= h
            bars.append({"x": round(x, 1), "y": round(y, 1), "w": round(bar_w, 1),
                         "h": round(h, 1), "tier": tier,
                         "title": f"{d['day'].isoformat()}: {n} {tier}"})
        if i % 5 == 0 or i == len(day_rows) - 1:
            labels.append({"x": round(x + bar_w / 2, 1), "y": CHART_H - PAD_B + 16,
                           "text": d["day"].strftime("%m-%d")})
    ticks = [{"y": round(PAD_T + plot_h - v / top * plot_h, 1), "value": v}
             for v in range(0, top + 1, step)]
    return {"width": CHART_W, "height": CHART_H, "left": PAD_L, "right": CHART_W - PAD_R,
            "bottom": PAD_T + plot_h, "bars": bars, "labels": labels, "ticks": ticks,
            "tiers": STACK}
