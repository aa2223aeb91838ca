"""What happens to a triage record after it is written: status, who did what, and when.

A record (``triage:records`` stream, see ``store.py``) is immutable. Everything that changes
lives beside it:

* ``triage:status``                hash  record id -> open | acknowledged | resolved
* ``triage:esc:<id>``              hash  acknowledged_by/_at, resolved_by/_at/_note,
                                         page_status (pending|sent|failed|retrying|not_paged),
                                         page_attempts, page_error, paged_at, last_paged_at,
                                         overdue ("1" once the 15-minute deadline passed)
* ``triage:esc:<id>:events``       list  JSON events, oldest first: {"at", "who", "action",
                                         "note"}; append-only, never edited from the dashboard
* ``triage:esc:<id>:members``      set   the records merged into escalation <id> (same
                                         conversation while it was open; ``paging.py``)

**One open escalation per conversation.** The first paging record of a conversation holds
its escalation (``triage:escalation:{<phone>}:<episode>`` -> that record's id). While it is
``open``, later records of the conversation are merged into it (``merged_into``, a member of
its set); one of a higher tier *raises it in place*: ``escalation_tier`` becomes the higher
tier (``raised_from``, ``raised_by``, ``raised_at``, the event ``raised``; the earlier tier's
history stays in its events) and it is paged again, once, at the new tier. Acknowledge and
resolve move an escalation with its members, in one transaction.

Records of one conversation are one *episode* for the care team (``episode_id`` when the record
has one, else ``conversation_id``): the dashboard shows one row for them, and acknowledge and
resolve move every record of the episode together. The nurse's work on an episode lives beside
the records, keyed by the patient's number and the episode id:

* ``triage:episode:{<phone>}:<episode>``         hash  assigned_to, assigned_by, assigned_at
* ``triage:episode:{<phone>}:<episode>:events``  list  JSON, oldest first, append-only:
      call    {"at", "ts", "who", "action": "call", "outcome", "called", "note"}
      note    {"at", "ts", "who", "action": "note", "note"}
      assign  {"at", "ts", "who", "action": "assign", "to", "note"}

Times are Unix seconds (float) in hashes and ISO-8601 UTC in events.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from . import keys
from .clock import iso_utc as _iso

# one server's names, re-exported (the service asks keys.of(r) at call time)
from .keys import (  # noqa: F401
    STATUS,
    episode_events_key,
    episode_key,
    esc_key,
    events_key,
    members_key,
)

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)
# What a call-back attempt came to (value -> words shown to the care team).
CALL_OUTCOMES = {
    "no_answer": "no answer",
    "voicemail": "left voicemail",
    "spoke_patient": "spoke to patient",
    "spoke_caregiver": "spoke to caregiver",
    "wrong_number": "wrong number",
}
CALLED = {"patient": "the patient's number", "caregiver": "the caregiver's number",
          "other": "another number"}
TEXT_MAX = 2000  # a working note, a resolution note
CALL_NOTE_MAX = 500


class TransitionError(ValueError):
    """The escalation is not in a state that allows this action."""


def escalation_tier(rec: dict[str, Any], esc: dict[str, str]) -> str:
    """The tier the escalation is at now: raised in place (``escalation_tier``), else the
    record's own."""
    return str(esc.get("escalation_tier") or rec.get("tier") or "")


def add_event(r: redis.Redis, rid: str, action: str, who: str, note: str = "",
              now: float | None = None, pipe: Any = None) -> None:
    now = time.time() if now is None else now
    event = json.dumps({"at": _iso(now), "ts": now, "who": who, "action": action,
                        "note": note})
    (pipe or r).rpush(keys.of(r).events_key(rid), event)


def events(r: redis.Redis, rid: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in r.lrange(keys.of(r).events_key(rid), 0, -1)]


def details(r: redis.Redis, rid: str) -> dict[str, str]:
    return r.hgetall(keys.of(r).esc_key(rid))


def status(r: redis.Redis, rid: str) -> str:
    return r.hget(keys.of(r).STATUS, rid) or OPEN


def _move(r: redis.Redis, rids: list[str], allowed_from: tuple[str, ...], to: str, who: str,
          fields: dict[str, Any], note: str, now: float) -> list[str]:
    """Move every record of ``rids`` whose status allows it, and every record merged into
    them (``members_key``), in one transaction; the ids moved. None of them allowed:
    TransitionError saying why.

    The transaction spans ``triage:status`` and each escalation's keys: on a Redis Cluster
    they all carry the tag ``{triage}`` (``keys.Layout``), one slot."""
    if not rids:
        raise TransitionError("no escalation")
    asked = list(dict.fromkeys(rids))
    names = keys.of(r)
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(names.STATUS, *(names.members_key(rid) for rid in asked))
                rids = list(asked)
                holders = [h for h in (pipe.hget(names.esc_key(rid), "merged_into")
                                       for rid in asked) if h]
                if holders:  # acting on a merged record acts on its escalation
                    pipe.watch(*(names.members_key(h) for h in holders))
                rids.extend(h for h in holders if h not in rids)
                for rid in list(rids):  # members ride with their escalation
                    rids.extend(m for m in sorted(pipe.smembers(names.members_key(rid)))
                                if m not in rids)
                currents = pipe.hmget(names.STATUS, rids)
                movable = [rid for rid, cur in zip(rids, currents, strict=True)
                           if cur in allowed_from]
                if not movable:
                    known = [cur for cur in currents[:len(asked)] if cur is not None] or [
                        cur for cur in currents if cur is not None]
                    if not known:
                        raise TransitionError(f"no escalation {rids[0]}")
                    raise TransitionError(f"escalation is {known[0]}, cannot become {to}")
                pipe.multi()
                for rid in movable:
                    pipe.hset(names.STATUS, rid, to)
                    pipe.hset(names.esc_key(rid), mapping={k: str(v) for k, v in fields.items()})
                    add_event(r, rid, to, who, note, now, pipe=pipe)
                pipe.execute()
                return movable
            except redis.WatchError:
                continue


def acknowledge(r: redis.Redis, rid: str | list[str], who: str, now: float | None = None
                ) -> list[str]:
    """Acknowledge one record, or every open record of an episode (a list of ids)."""
    now = time.time() if now is None else now
    return _move(r, [rid] if isinstance(rid, str) else list(rid), (OPEN,), ACKNOWLEDGED, who,
                 {"acknowledged_by": who, "acknowledged_at": now}, "", now)


def resolve(r: redis.Redis, rid: str | list[str], who: str, note: str,
            now: float | None = None) -> list[str]:
    """Resolve one record, or every unresolved record of an episode (a list of ids)."""
    now = time.time() if now is None else now
    return _move(r, [rid] if isinstance(rid, str) else list(rid), (OPEN, ACKNOWLEDGED),
                 RESOLVED, who, {"resolved_by": who, "resolved_at": now, "resolved_note": note},
                 note, now)


# --------------------------------------------------------------------------- episodes

def episode_of(rec: dict[str, Any]) -> str:
    """The episode a record belongs to: its conversation (a record from no conversation is an
    episode of its own)."""
    return str(rec.get("episode_id") or rec.get("conversation_id") or f"record-{rec['id']}")


def _episode_event(r: redis.Redis, phone: str, episode: str, event: dict[str, Any],
                   now: float, pipe: Any = None) -> dict[str, Any]:
    full = {"at": _iso(now), "ts": now, **event}
    (pipe or r).rpush(keys.of(r).episode_events_key(phone, episode), json.dumps(full))
    return full


def episode_events(r: redis.Redis, phone: str, episode: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in r.lrange(keys.of(r).episode_events_key(phone, episode), 0, -1)]


def episode_state(r: redis.Redis, phone: str, episode: str) -> dict[str, str]:
    return r.hgetall(keys.of(r).episode_key(phone, episode))


def log_call(r: redis.Redis, phone: str, episode: str, who: str, outcome: str, called: str,
             note: str = "", now: float | None = None) -> dict[str, Any]:
    """One call-back attempt and what came of it."""
    if outcome not in CALL_OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(CALL_OUTCOMES)}")
    if called not in CALLED:
        raise ValueError(f"called must be one of {', '.join(CALLED)}")
    note = note.strip()
    if len(note) > CALL_NOTE_MAX:
        raise ValueError(f"the note is longer than {CALL_NOTE_MAX} characters")
    now = time.time() if now is None else now
    return _episode_event(r, phone, episode, {"who": who, "action": "call", "outcome": outcome,
                                               "called": called, "note": note}, now)


def add_note(r: redis.Redis, phone: str, episode: str, who: str, note: str,
             now: float | None = None) -> dict[str, Any]:
    """A working note: any number of them, beside (not instead of) the resolution note."""
    note = note.strip()
    if not note:
        raise ValueError("the note is empty")
    if len(note) > TEXT_MAX:
        raise ValueError(f"the note is longer than {TEXT_MAX} characters")
    now = time.time() if now is None else now
    return _episode_event(r, phone, episode, {"who": who, "action": "note", "note": note}, now)


def assign(r: redis.Redis, phone: str, episode: str, to: str, who: str, note: str = "",
           now: float | None = None) -> dict[str, Any]:
    """Give the episode to ``to`` (a username; "" takes it from everyone). ``who`` did it."""
    now = time.time() if now is None else now
    with r.pipeline(transaction=True) as pipe:
        if to:
            pipe.hset(keys.of(r).episode_key(phone, episode),
                      mapping={"assigned_to": to, "assigned_by": who, "assigned_at": str(now)})
        else:
            pipe.hdel(keys.of(r).episode_key(phone, episode), "assigned_to", "assigned_by",
                      "assigned_at")
        event = _episode_event(r, phone, episode, {"who": who, "action": "assign", "to": to,
                                                   "note": note.strip()}, now, pipe=pipe)
        pipe.execute()
    return event


def assign_if_nobody(r: redis.Redis, phone: str, episode: str, who: str,
                     now: float | None = None) -> bool:
    """The nurse who acknowledges or calls back an episode nobody has takes it."""
    now = time.time() if now is None else now
    if not r.hsetnx(keys.of(r).episode_key(phone, episode), "assigned_to", who):
        return False
    r.hset(keys.of(r).episode_key(phone, episode),
           mapping={"assigned_by": who, "assigned_at": str(now)})
    _episode_event(r, phone, episode, {"who": who, "action": "assign", "to": who,
                                       "note": "took it by acting on it"}, now)
    return True
