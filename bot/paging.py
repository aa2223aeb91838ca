"""Paging the on-call care team, run by the worker (``bot/worker.py``).

* A Redis Stream consumer group (``pagers``) reads every new triage record from
  ``triage:records`` (XREADGROUP), hands it to the worker's router, and XACKs it afterwards.
  Entries a crashed worker read but never acknowledged are taken over with XAUTOCLAIM once they
  have been idle ``claim_idle_ms``; several workers may run, each entry goes to one of them.
  Routing is idempotent (HSETNX / ZADD NX), so an entry handled twice pages once.
* Which records page (clinical-rules.md, "The four tiers" and rule 5): every EMERGENCY and URGENT
  record, whatever its kind; an abandoned checklist whose tier is SOON or higher ("incomplete
  triage"). ROUTINE and completed SOON records do not page.
* A page goes to every ON_CALL_NUMBERS number: tier, checklist, the first reason and the
  dashboard link; never the patient's number. Each text carries a StatusCallback, so the
  escalation shows per number whether it was delivered (``notify.Receipts``); an EMERGENCY
  page not delivered or not acknowledged in time becomes a phone call (``voice.py``). Retries
  back off exponentially (PAGE_RETRY_SECONDS x 2^n, PAGE_MAX_ATTEMPTS attempts). All state is
  in Redis, so a restarted worker resumes where the last one stopped:

  ``triage:pages:due``       sorted set  record id -> time of the next attempt
  ``triage:pages:deadline``  sorted set  record id -> acknowledgement deadline (EMERGENCY/URGENT)
  ``triage:esc:<id>``        hash        page_status, page_attempts, page_error, paged_at,
                                         last_paged_at, overdue (see ``escalations.py``), and
                                         page_kind (new | incomplete | no_follow_up_reply),
                                         page_round, page_round_attempts, page_delivered,
                                         page_next_at
* An EMERGENCY/URGENT escalation still ``open`` ACK_DEADLINE_MINUTES after its record was
  created is marked ``overdue=1`` and paged again, every deadline interval, until someone
  acknowledges or resolves it (rule 5).
* One open escalation per conversation (``escalations.py``): while the conversation's
  escalation is open, a record of the same or a lower tier is merged into it (no page), one of
  a higher tier raises it in place and pages it again, once, at the new tier (a new page round
  of kind ``raised``). ``triage:esc:<id>:pages`` is the page ledger: ``r<round>:<number>`` and,
  outside overdue re-pages, ``t:<TIER>:<number>`` once a text has gone out, so a number gets
  at most one page per escalation per tier (plus the overdue re-pages rule 5 asks for), even
  across a worker killed mid-page or a raise while a round is being sent.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from . import keys
from .clock import iso_utc as iso
from .conversation.flows import TIER_RANK
from .escalations import (
    OPEN,
    add_event,
    escalation_tier,
    status,
)

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import DEAD_LETTERS, DEADLINES, DUE, holder_key, ledger_key  # noqa: F401
from .notify import ON_CALL, Outbox, SendError, scrub
from .sms import segments, to_gsm7
from .store import RECORDS, STATUS, Store, decode_record, mask_phone  # noqa: F401

log = logging.getLogger(__name__)

GROUP = "pagers"
PAGED_TIERS = ("EMERGENCY", "URGENT")
WORRYING_TIERS = ("SOON", "URGENT", "EMERGENCY")
LEASE_SECONDS = 120.0       # a claimed job not finished by then is picked up again
EMERGENCY_LEASE_SECONDS = 15.0  # ... an EMERGENCY page sooner: a crash delays it <= ~30 s
MAX_BACKOFF_SECONDS = 1800.0
BATCH = 100
WORKER = "worker"           # the "who" of the worker's events

PENDING, SENT, FAILED, RETRYING, NOT_PAGED = "pending", "sent", "failed", "retrying", "not_paged"
MERGED = "merged"  # same conversation as an open escalation, not a higher tier
RAISED = "raised"  # same conversation as an open escalation, a higher tier: raised in place
OVERDUE_ROUND = "overdue"
PAGE_ONCE_TTL = 7 * 24 * 3600


# Claim a due job: only the worker that moves its score forward runs it (several workers).
_CLAIM = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class PagingSettings:
    on_call: tuple[str, ...]
    base_url: str
    ack_deadline: float
    max_attempts: int
    retry_base: float

    @classmethod
    def from_config(cls, config: Any) -> PagingSettings:
        numbers = tuple(n.strip() for n in (config.get("ON_CALL_NUMBERS") or "").split(",")
                        if n.strip())
        return cls(on_call=numbers,
                   base_url=(config.get("PUBLIC_BASE_URL") or "").rstrip("/"),
                   ack_deadline=float(config.get("ACK_DEADLINE_MINUTES", 15)) * 60,
                   max_attempts=max(1, int(config.get("PAGE_MAX_ATTEMPTS", 6))),
                   retry_base=max(1.0, float(config.get("PAGE_RETRY_SECONDS", 30))))


# --------------------------------------------------------------------------- shared helpers

def claim_due(r: redis.Redis, key: str, member: str, now: float, until: float) -> bool:
    """Atomically move ``member`` of sorted set ``key`` from a score <= now to ``until``."""
    return bool(r.eval(_CLAIM, 1, key, member, repr(now), repr(until)))


def due_members(r: redis.Redis, key: str, now: float, limit: int = BATCH) -> list[str]:
    return list(r.zrangebyscore(key, "-inf", now, start=0, num=limit))


def backoff(base: float, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def record_time(rid: str, rec: dict[str, Any]) -> float:
    """When the record was made: its created_at, else the stream id's milliseconds."""
    raw = rec.get("created_at") or ""
    try:
        return datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return int(rid.split("-", 1)[0]) / 1000


# --------------------------------------------------------------------------- the consumer group

def ensure_group(r: redis.Redis) -> None:
    """Create the consumer group once. It starts at the beginning of the stream so that no
    record is ever skipped; records no longer open when they are read are not paged."""
    try:
        r.xgroup_create(keys.of(r).RECORDS, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def read_new(r: redis.Redis, consumer: str, *, count: int = BATCH,
             claim_idle_ms: int = 60_000) -> list[tuple[str, dict[str, Any] | None]]:
    """Entries for this consumer: first those another (crashed) consumer left pending for
    ``claim_idle_ms``, then new ones. They stay pending until ``ack``."""
    ensure_group(r)
    entries: list[tuple[str, dict[str, Any] | None]] = []
    start = "0-0"
    while len(entries) < count:
        resp = r.xautoclaim(keys.of(r).RECORDS, GROUP, consumer, min_idle_time=claim_idle_ms,
                            start_id=start, count=count)
        start, claimed = resp[0], resp[1]
        entries.extend(_parse(r, rid, fields) for rid, fields in claimed)
        if start in ("0-0", b"0-0") or not claimed:
            break
    if len(entries) < count:
        for _stream, items in r.xreadgroup(GROUP, consumer, {keys.of(r).RECORDS: ">"},
                                           count=count - len(entries)) or []:
            entries.extend(_parse(r, rid, fields) for rid, fields in items)
    return entries


def _parse(r: redis.Redis, rid: str, fields: dict[str, str] | None
           ) -> tuple[str, dict[str, Any] | None]:
    if not fields:
        return rid, None  # trimmed or deleted meanwhile
    try:
        return rid, decode_record(fields)
    except (KeyError, ValueError) as exc:
        dead_letter(r, rid, fields, f"{type(exc).__name__}: {exc}"[:200])
        return rid, None


def dead_letter(r: redis.Redis, rid: str, fields: dict[str, str], why: str) -> None:
    """A record nobody can read is not acknowledged silently: it is kept (as stored) on the
    dead-letter list, which /healthz and the dashboard banner raise as an alarm."""
    entry = {"id": rid, "why": why, "at": iso(time.time()),
             "fields": {k: str(v)[:4000] for k, v in fields.items()}}
    r.lpush(keys.of(r).DEAD_LETTERS, json.dumps(entry, separators=(",", ":")))
    log.error("record %s cannot be read (%s): moved to %s; ALARM raised", rid, why,
              keys.of(r).DEAD_LETTERS)


_DIGITS_RUN = re.compile(r"[+\d][\d\s().\-/]*\d")
PREVIEW_CHARS = 500


def mask_numbers(text: str) -> str:
    """Anything that could be a phone number, however it is written (``+1 (555) 123-4567``,
    percent-encoded ``%2B1%20555...``, digits in JSON), masked like ``mask_phone``: every run
    of digits and separators with 7 or more digits. Dates may be masked too (safe side)."""
    text = urllib.parse.unquote(text)

    def mask(m: re.Match[str]) -> str:
        digits = re.sub(r"[^\d+]", "", m.group(0))
        return mask_phone(digits) if sum(c.isdigit() for c in digits) >= 7 else m.group(0)

    return _DIGITS_RUN.sub(mask, text)


def dead_letters(r: redis.Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The dead-letter list, newest first, for people: the record id, why it could not be
    read, when, and each stored field cut to PREVIEW_CHARS with numbers masked."""
    out = []
    for raw in r.lrange(keys.of(r).DEAD_LETTERS, 0, limit - 1):
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            entry = {"id": "?", "why": "the dead-letter entry itself cannot be read",
                     "fields": {"raw": str(raw)}}
        fields = entry.get("fields") if isinstance(entry.get("fields"), dict) else {}
        out.append({"id": str(entry.get("id", "?")),
                    "why": mask_numbers(str(entry.get("why", ""))),
                    "at": entry.get("at", ""),
                    "fields": {mask_numbers(str(k)): mask_numbers(str(v))[:PREVIEW_CHARS]
                               for k, v in fields.items()}})
    return out


def ack(r: redis.Redis, rid: str) -> None:
    r.xack(keys.of(r).RECORDS, GROUP, rid)


def consume(r: redis.Redis, consumer: str, route: Callable[[str, dict[str, Any]], Any], *,
            count: int = BATCH, claim_idle_ms: int = 60_000) -> int:
    """Read, route and acknowledge a batch. A record whose routing raises stays pending and is
    taken over again later (by this or another worker)."""
    done = 0
    for rid, rec in read_new(r, consumer, count=count, claim_idle_ms=claim_idle_ms):
        if rec is not None:
            try:
                route(rid, rec)
            except Exception:
                log.exception("could not route record %s; it stays pending", rid)
                continue
        ack(r, rid)
        done += 1
    return done


# --------------------------------------------------------------------------- what pages

def page_kind(rec: dict[str, Any]) -> str | None:
    """Why this record pages, or None. clinical-rules.md: EMERGENCY and URGENT are paged at once;
    rule 5: a checklist abandoned after a worrying (SOON or higher) answer alerts the team."""
    tier = rec.get("tier")
    if rec.get("kind") == "abandoned" and tier in WORRYING_TIERS:
        return "incomplete"
    if tier in PAGED_TIERS:
        return "new"
    return None


_HEADS = {"new": "", RAISED: "", "incomplete": " incomplete triage (no reply)",
          "no_follow_up_reply": " follow-up re-check not completed"}


def page_text(rid: str, rec: dict[str, Any], base_url: str, *, kind: str = "new",
              overdue: bool = False, tier: str = "", raised_from: str = "") -> str:
    """A short GSM-7 page: tier, checklist, first reason, link. No patient number; anything in
    the reason that looks like a phone number is masked. ``rid`` is the escalation, ``rec``
    the record the page is about (the one that raised it, after a raise), ``tier`` the
    escalation's tier when it is not the record's."""
    tier = tier or rec.get("tier", "?")
    flow = rec.get("flow") or "?"
    was = f" (was {raised_from})" if raised_from else ""
    head = f"{'OVERDUE, not acknowledged: ' if overdue else ''}{tier}{was}" \
           f"{_HEADS.get(kind, '')}, {flow.replace('_', ' ')}"
    reasons = rec.get("reasons") or []
    reason = re.sub(r"\s+", " ", scrub(str(reasons[0]))) if reasons else ""
    link = f"{base_url}/dashboard/escalations/{rid}" if base_url else f"escalation {rid}"
    extra = " Unregistered number." if rec.get("unregistered") else ""

    def build(reason_text: str) -> str:
        middle = f": {reason_text}." if reason_text else "."
        return to_gsm7(f"{head}{middle}{extra} {link}")

    text = build(reason)
    cut = len(reason)
    while segments(text) > 1 and cut > 24:  # one segment if the reason can be shortened
        cut -= 4
        text = build(reason[:cut].rstrip() + "...")
    return text


# --------------------------------------------------------------------------- paging state

class Pager:
    def __init__(self, store: Store, outbox: Outbox, settings: PagingSettings):
        self.store = store
        self.r = store.r
        self.outbox = outbox
        self.s = settings

    @property
    def k(self) -> keys.Layout:
        """The deployment's key names (one server or a cluster), from the client in use."""
        return keys.of(self.r)

    def on_record(self, rid: str, rec: dict[str, Any], now: float) -> str | None:
        """Route one new record: start its page and its acknowledgement deadline; or, when its
        conversation already has an open escalation, merge into it (MERGED: no page, no
        deadline, no call of its own) or, for a higher tier, raise that escalation in place
        and page it again at the new tier (RAISED; ``merged_into`` names the escalation)."""
        kind = page_kind(rec)
        if kind is None:
            return None
        if kind in ("new", "incomplete"):  # (not a follow-up's own page: no new record)
            joined = self._join_episode(rid, rec, now)
            if joined is not None:
                return joined
        if rec.get("tier") in PAGED_TIERS:
            self.r.zadd(self.k.DEADLINES, {rid: record_time(rid, rec) + self.s.ack_deadline},
                        nx=True)
        self.start_page(rid, kind, now)
        return kind

    def start_page(self, rid: str, kind: str, now: float, *, note: str = "") -> bool:
        """First page of an escalation (once: a record routed twice pages once)."""
        key = self.k.esc_key(rid)
        if not self.s.on_call:
            if self.r.hsetnx(key, "page_status", NOT_PAGED):
                self.r.hset(key, mapping={"page_kind": kind,
                                          "page_error": "no ON_CALL_NUMBERS configured"})
                add_event(self.r, rid, "not_paged", WORKER,
                          "no on-call numbers configured (ON_CALL_NUMBERS): nobody was paged",
                          now)
                log.warning("escalation %s not paged: ON_CALL_NUMBERS is empty", rid)
            return False
        tier = (self.store.record(rid) or {}).get("tier", "")
        # One transaction: a worker killed here leaves either no page (the record is routed
        # again and starts it) or a page that is due, never a status without its due time.
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.hexists(key, "page_status"):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hsetnx(key, "escalation_tier", tier)
                    pipe.hset(key, mapping={
                        "page_status": PENDING, "page_kind": kind, "page_tier": tier,
                        "page_attempts": 0, "page_round": 1, "page_round_kind": kind,
                        "page_round_attempts": 0, "page_delivered": "[]",
                        "page_next_at": now})
                    if note:
                        add_event(self.r, rid, "page_queued", WORKER, note, now, pipe=pipe)
                    pipe.zadd(self.k.DUE, {rid: now})
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def _join_episode(self, rid: str, rec: dict[str, Any], now: float) -> str | None:
        """One open escalation per conversation. None: this record holds (or now holds) the
        conversation's escalation and pages as usual. MERGED / RAISED: it joined the open one.

        One transaction (WATCH the conversation's holder, the holder's escalation hash and
        ``triage:status``): two workers routing two records of one conversation at once, or
        a record routed twice after a crash, end the same way. On a Redis Cluster the holder
        key is ``{triage}:escalation:{<phone>}:<episode>``: with the escalation keys and the
        status hash in the slot of ``{triage}`` (``keys.Layout``)."""
        episode = rec.get("episode_id") or rec.get("conversation_id")
        if not episode:
            return None
        hkey = self.k.holder_key(str(rec.get("phone", "")), str(episode))
        tier = str(rec.get("tier") or "")
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(hkey, self.k.esc_key(rid))
                    mine = pipe.hmget(self.k.esc_key(rid), "merged_into", "page_status")
                    if mine[0]:  # routed before (a worker died before XACK)
                        return RAISED if pipe.hget(self.k.esc_key(mine[0]), "raised_by") == rid \
                            else MERGED
                    holder = pipe.get(hkey)
                    if holder == rid or mine[1]:
                        return None  # it holds the escalation already
                    current = holder_esc = None
                    if holder:
                        pipe.watch(self.k.esc_key(holder), self.k.STATUS)
                        current = pipe.hget(self.k.STATUS, holder) or OPEN
                        holder_esc = pipe.hgetall(self.k.esc_key(holder))
                    if holder is None or current != OPEN or not holder_esc:
                        # none, or the last one was acknowledged / resolved: a new escalation
                        pipe.multi()
                        pipe.set(hkey, rid, ex=PAGE_ONCE_TTL)
                        pipe.hsetnx(self.k.esc_key(rid), "escalation_tier", tier)
                        pipe.execute()
                        return None
                    was = escalation_tier({}, holder_esc) or tier
                    raise_it = TIER_RANK.get(tier, 0) > TIER_RANK.get(was, 0)
                    pipe.multi()
                    pipe.sadd(self.k.members_key(holder), rid)
                    pipe.expire(hkey, PAGE_ONCE_TTL)
                    pipe.hset(self.k.esc_key(rid), mapping={
                        "page_status": MERGED, "page_kind": page_kind(rec) or "new",
                        "merged_into": holder, "page_error": ""})
                    if raise_it:
                        self._queue_raise(pipe, holder, holder_esc, rid, rec, was, tier, now)
                        add_event(self.r, rid, "page_merged", WORKER,
                                  f"same conversation, higher tier: escalation {holder} "
                                  f"raised from {was} to {tier} and paged again", now,
                                  pipe=pipe)
                    else:
                        add_event(self.r, rid, "page_merged", WORKER,
                                  f"same conversation, tier {tier} not above {was}: escalation "
                                  f"{holder} is open and was paged; not paged again", now,
                                  pipe=pipe)
                    pipe.execute()
                    if raise_it:
                        log.warning("escalation %s raised in place from %s to %s (record %s)",
                                    holder, was, tier, rid)
                    return RAISED if raise_it else MERGED
                except redis.WatchError:
                    continue

    def _queue_raise(self, pipe: Any, holder: str, esc: dict[str, str], rid: str,
                     rec: dict[str, Any], was: str, tier: str, now: float) -> None:
        """Queued in ``_join_episode``'s transaction: the escalation takes the higher tier
        and starts a new page round at it (sent to each number once: the ledger)."""
        reason = scrub(str((rec.get("reasons") or [""])[0]))[:200]
        fields: dict[str, Any] = {"escalation_tier": tier, "raised_from": was,
                                  "raised_by": rid, "raised_at": now, "page_record": rid,
                                  "page_tier": tier}
        pipe.rpush(self.k.events_key(holder), json.dumps({
            "at": iso(now), "ts": now, "who": WORKER, "action": "raised",
            "note": f"raised in place from {was} to {tier} by record {rid}"
                    + (f" ({reason})" if reason else "")
                    + ("; paging again at the new tier" if self.s.on_call else "")}))
        if tier in PAGED_TIERS:
            # the earlier deadline stands if it is sooner (ZADD LT): the wait already counts
            pipe.zadd(self.k.DEADLINES, {holder: record_time(rid, rec) + self.s.ack_deadline},
                      lt=True)
        if not self.s.on_call:
            fields.update({"page_status": NOT_PAGED,
                           "page_error": "no ON_CALL_NUMBERS configured"})
        else:
            fields.update({"page_status": PENDING, "page_kind": RAISED,
                           "page_round": int(esc.get("page_round") or 0) + 1,
                           "page_round_kind": RAISED, "page_round_attempts": 0,
                           "page_delivered": "[]", "page_next_at": now, "page_error": ""})
            pipe.zadd(self.k.DUE, {holder: now})
        pipe.hset(self.k.esc_key(holder), mapping=fields)

    # -- sending
    def send_due(self, now: float) -> int:
        sent = 0
        for rid in due_members(self.r, self.k.DUE, now):
            lease = (EMERGENCY_LEASE_SECONDS if self.r.hget(self.k.esc_key(rid), "page_tier")
                     == "EMERGENCY" else LEASE_SECONDS)
            if not claim_due(self.r, self.k.DUE, rid, now, now + lease):
                continue  # another worker has it
            try:
                if self.attempt(rid, now):
                    sent += 1
            except Exception:
                log.exception("paging %s failed unexpectedly; retried after the lease", rid)
        return sent

    def attempt(self, rid: str, now: float) -> bool:
        key = self.k.esc_key(rid)
        d = self.r.hgetall(key)
        rec = self.store.record(d.get("page_record") or rid)
        if rec is None:
            self.r.zrem(self.k.DUE, rid)
            return False
        if status(self.r, rid) != OPEN:
            self.r.zrem(self.k.DUE, rid)
            self.r.hset(key, mapping={"page_status": NOT_PAGED, "page_next_at": ""})
            add_event(self.r, rid, "page_cancelled", WORKER,
                      f"escalation already {status(self.r, rid)}: page not needed", now)
            return False
        numbers = self.s.on_call
        page_round = str(d.get("page_round") or "1")
        tier = escalation_tier(rec, d)
        once_per_tier = d.get("page_round_kind") != OVERDUE_ROUND
        ledger = self.r.hgetall(self.k.ledger_key(rid))
        kind = d.get("page_kind") or "new"
        body = page_text(rid, rec, self.s.base_url, kind=kind,
                         overdue=d.get("overdue") == "1", tier=tier,
                         raised_from=d.get("raised_from", "") if kind == RAISED else "")
        errors = []
        for number in numbers:
            if f"r{page_round}:{number}" in ledger or (
                    once_per_tier and f"t:{tier}:{number}" in ledger):
                continue  # this number has this round's page, or this tier's
            claim = f"p{page_round}:{number}"
            if claim in ledger:
                # A worker stopped between starting this text and recording it: it may have
                # gone out. Sent again (a page twice is better than none), and said so.
                add_event(self.r, rid, "page_resent", WORKER,
                          f"page to {mask_phone(number)} sent again: a worker stopped while "
                          "sending it (it may arrive twice)", now)
            sent = {f"r{page_round}:{number}": f"{now}"}
            if once_per_tier:
                sent[f"t:{tier}:{number}"] = f"{now}"
            try:
                self.r.hset(self.k.ledger_key(rid), claim, f"{now}")
                # recorded the moment the provider accepts it: a worker killed after that
                # never texts this number again when the page is taken over
                self.outbox.send_tracked(
                    rid, number, body, ON_CALL, now,
                    on_sent=lambda sent=sent: self.r.hset(self.k.ledger_key(rid), mapping=sent))
                ledger.update(sent)
            except SendError as exc:
                self.r.hdel(self.k.ledger_key(rid), claim)  # refused: certainly not sent
                errors.append(f"{mask_phone(number)}: {exc}")
            except Exception as exc:  # a backend bug must not stop the retries
                errors.append(f"{mask_phone(number)}: {type(exc).__name__}")
                log.exception("SMS backend raised for escalation %s", rid)
        delivered = [n for n in numbers if f"r{page_round}:{n}" in ledger
                     or (once_per_tier and f"t:{tier}:{n}" in ledger)]
        return self._finish_attempt(rid, d, page_round, delivered, errors, now, rec)

    def _finish_attempt(self, rid: str, d: dict[str, str], page_round: str,
                        delivered: list[str], errors: list[str], now: float,
                        rec: dict[str, Any]) -> bool:
        """Write the attempt's outcome, unless a raise or an overdue re-page started a new
        round meanwhile (then that round owns the status and the due time)."""
        key = self.k.esc_key(rid)
        numbers = self.s.on_call
        round_attempts = int(d.get("page_round_attempts") or 0) + 1
        reached = len(delivered)
        fields: dict[str, Any] = {"page_attempts": int(d.get("page_attempts") or 0) + 1,
                                  "page_round_attempts": round_attempts,
                                  "page_delivered": json.dumps(delivered)}
        if not errors:
            fields.update({"page_status": SENT, "page_error": "", "last_paged_at": now,
                           "page_next_at": ""})
            if not d.get("paged_at"):
                fields["paged_at"] = now
            event = ("paged", f"page sent to {reached} on-call number(s), attempt "
                              f"{round_attempts}")
            due = None
        elif round_attempts < self.s.max_attempts:
            wait = backoff(self.s.retry_base, round_attempts)
            error = "; ".join(errors)[:500]
            fields.update({"page_status": RETRYING, "page_error": error,
                           "page_next_at": now + wait})
            event = ("page_failed", f"attempt {round_attempts} of {self.s.max_attempts} failed "
                                    f"({reached} of {len(numbers)} reached): {error}; retry in "
                                    f"{wait:.0f} s")
            due = now + wait
        else:
            error = "; ".join(errors)[:500]
            fields.update({"page_status": FAILED, "page_error": error, "page_next_at": ""})
            event = ("page_failed", f"gave up after {round_attempts} attempts ({reached} of "
                                    f"{len(numbers)} reached): {error}")
            due = None
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if str(pipe.hget(key, "page_round") or "1") != page_round:
                        pipe.unwatch()
                        add_event(self.r, rid, "page_round_superseded", WORKER,
                                  f"round {page_round}: {event[1]}; a newer round is "
                                  "being paged", now)
                        return not errors
                    pipe.multi()
                    pipe.hset(key, mapping=fields)
                    if due is None:
                        pipe.zrem(self.k.DUE, rid)
                    else:
                        pipe.zadd(self.k.DUE, {rid: due})
                    add_event(self.r, rid, event[0], WORKER, event[1], now, pipe=pipe)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if not errors:
            log.info("paged escalation %s tier=%s attempt=%s", rid,
                     d.get("page_tier") or rec.get("tier"), round_attempts)
        elif due is not None:
            log.warning("page for %s failed (attempt %s), retry in %.0f s", rid,
                        round_attempts, due - now)
        else:
            log.error("page for %s FAILED after %s attempts", rid, round_attempts)
        return not errors

    # -- the acknowledgement deadline
    def repage_overdue(self, now: float) -> int:
        """Rule 5: not acknowledged within the deadline -> overdue, paged again; repeated every
        deadline interval until acknowledged or resolved."""
        repaged = 0
        for rid in due_members(self.r, self.k.DEADLINES, now):
            current = status(self.r, rid)
            if current != OPEN:
                self.r.zrem(self.k.DEADLINES, rid)
                continue
            if not claim_due(self.r, self.k.DEADLINES, rid, now, now + self.s.ack_deadline):
                continue
            key = self.k.esc_key(rid)
            first = self.r.hget(key, "overdue") != "1"
            minutes = round(self.s.ack_deadline / 60)
            self.r.hset(key, "overdue", 1)
            why = (f"not acknowledged within {minutes} min" if first else
                   f"still not acknowledged {minutes} min after the last page")
            if not self.s.on_call:
                self.r.hset(key, mapping={"page_status": NOT_PAGED,
                                          "page_error": "no ON_CALL_NUMBERS configured"})
                add_event(self.r, rid, "overdue", WORKER,
                          f"{why}; no on-call numbers configured (ON_CALL_NUMBERS): nobody "
                          "was paged", now)
                log.warning("escalation %s overdue and not paged: ON_CALL_NUMBERS is empty", rid)
                continue
            with self.r.pipeline(transaction=True) as pipe:  # the new round, due, at once
                while True:
                    try:
                        pipe.watch(key)
                        page_round = int(pipe.hget(key, "page_round") or 0) + 1
                        pipe.multi()
                        pipe.hset(key, mapping={
                            "page_status": PENDING, "page_round": page_round,
                            "page_round_kind": OVERDUE_ROUND, "page_round_attempts": 0,
                            "page_delivered": "[]", "page_next_at": now})
                        pipe.hsetnx(key, "page_kind", "new")
                        pipe.zadd(self.k.DUE, {rid: now})
                        add_event(self.r, rid, "overdue_repaged", WORKER,
                                  f"{why}: marked overdue, paging again (round {page_round})",
                                  now, pipe=pipe)
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
            log.warning("escalation %s overdue: paging again (round %s)", rid, page_round)
            repaged += 1
        return repaged
