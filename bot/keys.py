"""Every Redis key the service uses, in one place: the one owner of key formats.

Keys that belong to one patient carry the patient's number as a hash tag (``{+1555...}``), so
that everything a message writes for that patient lands in one Redis Cluster slot. The modules
that use a key import its name from here (and re-export it where older code imports it from
them); nothing else writes a ``"triage:..."`` string.

| key | type | owner (reads/writes) |
|---|---|---|
| ``triage:{<phone>}:session`` | string (compressed JSON) | store: the conversation core's session |
| ``triage:{<phone>}:meta`` | hash | store: session version, MessageSids answered, rate count |
| ``triage:{<phone>}:texts`` | list | store: the compact transcript |
| ``triage:{<phone>}:transcript`` | stream | store: the transcript before issue 9 (read) |
| ``triage:{<phone>}:sid:<sid>`` | string | store: a MessageSid's reply before issue 9 (read) |
| ``triage:{<phone>}:optout`` | string | store: STOP outlives the session |
| ``triage:{<phone>}:profile`` | hash | profile: the care team's profile |
| ``triage:{<phone>}:outbox`` | hash | store (Redis Cluster): records not yet moved |
| ``triage:{<tag of slot s>}:pending`` | zset | store (Redis Cluster): one per slot, below |
| ``triage:{<tag>}:moved:<outbox id>`` | string | store (Redis Cluster): a moved entry |
| ``triage:records`` | stream | store: triage records (consumer group: the pager) |
| ``triage:status`` | hash | store, escalations: record id -> open/acknowledged/resolved |
| ``triage:inflight`` | zset | store: patients with a question pending (abandon sweep) |
| ``triage:esc:<id>`` and ``:events``, ``:members``, ``:pages``, ``:delivery``, ``:voice`` |
  hash, list, set | escalations, paging, notify, voice |
| ``triage:escalation:{<phone>}:<episode>`` | string | paging: the episode's escalation |
| ``triage:episode:{<phone>}:<episode>`` and ``:events`` | hash/list | escalations: nurse's work |
| ``triage:pages:due`` / ``triage:pages:deadline`` | zset | paging |
| ``triage:deadletter`` | list | paging: records that could not be read |
| ``triage:followups`` / ``triage:followup:conv:<id>`` | zset/string | followup |
| ``triage:voice:due`` / ``:waiting`` / ``:line:<id>`` | zset/hash | voice |
| ``triage:idx:*`` | zsets, string | indexes: care-read indexes fed by the worker |
| ``triage:users`` / ``triage:user:<name>`` | set/hash | users |
| ``triage:login:*`` | strings | users, dashboard.throttle: lockouts and limits |
| ``triage:websession:*`` | strings | dashboard.sessions: server-side dashboard sessions |
| ``triage:audit`` | stream | audit |
| ``triage:patients`` | set | profile: every enrolled number |
| ``triage:zdict:<id>`` | string | textcodec: the compression dictionary of a rules version |

Redis Cluster (setting ``REDIS_CLUSTER``) only: a message's records go to the patient's
outbox (outbox id ``<ms base 36>-<n>-<16 hex>`` -> ``<status>|<record JSON>``), and the
slot's pending set (the tag of slot s is a 1 to 3 character string whose CRC16 lands on s,
``slot_tags``) holds ``o<phone>`` (score 0) while the patient has an outbox and ``a<phone>``
(score: last message time) while a checklist is open (the in-flight index of one server).
``moved`` markers (in the slot of ``triage:records``) keep an entry from being added twice;
they expire after 7 days.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import string

from redis.crc import key_slot

# -- one patient (the number is the hash tag)


def session_key(phone: str) -> str:
    return f"triage:{{{phone}}}:session"


def meta_key(phone: str) -> str:
    return f"triage:{{{phone}}}:meta"


def texts_key(phone: str) -> str:
    return f"triage:{{{phone}}}:texts"


def transcript_key(phone: str) -> str:
    return f"triage:{{{phone}}}:transcript"


def dedup_key(phone: str, sid: str) -> str:
    return f"triage:{{{phone}}}:sid:{sid}"


def optout_key(phone: str) -> str:
    return f"triage:{{{phone}}}:optout"


def profile_key(phone: str) -> str:
    return f"triage:{{{phone}}}:profile"


def outbox_key(phone: str) -> str:
    """Redis Cluster only: a message's records, in the patient's slot, until moved."""
    return f"triage:{{{phone}}}:outbox"


def holder_key(phone: str, episode: str) -> str:
    """The record holding the conversation's escalation (the patient's hash tag)."""
    return f"triage:escalation:{{{phone}}}:{episode}"


def episode_key(phone: str, episode: str) -> str:
    return f"triage:episode:{{{phone}}}:{episode}"


def episode_events_key(phone: str, episode: str) -> str:
    return episode_key(phone, episode) + ":events"


# -- records and what happens to them
RECORDS = "triage:records"
STATUS = "triage:status"
INFLIGHT = "triage:inflight"
DUE = "triage:pages:due"
DEADLINES = "triage:pages:deadline"
DEAD_LETTERS = "triage:deadletter"  # list: records that could not be read (JSON), newest first
FOLLOWUPS = "triage:followups"
VOICE_DUE = "triage:voice:due"
VOICE_WAITING = "triage:voice:waiting"  # record id -> since when it waits for a free phone


def esc_key(rid: str) -> str:
    return f"triage:esc:{rid}"


def events_key(rid: str) -> str:
    return f"triage:esc:{rid}:events"


def members_key(rid: str) -> str:
    return f"triage:esc:{rid}:members"


def ledger_key(rid: str) -> str:
    return f"triage:esc:{rid}:pages"


def delivery_key(rid: str) -> str:
    return f"triage:esc:{rid}:delivery"


def voice_key(rid: str) -> str:
    return f"triage:esc:{rid}:voice"


def line_key(line_id: str) -> str:
    return f"triage:voice:line:{line_id}"


def link_key(conversation_id: str) -> str:
    return f"triage:followup:conv:{conversation_id}"


# -- Redis Cluster: one small key per slot (16,384), found by the worker at a constant cost
SLOTS = 16384


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For every cluster slot s, a short tag (1 to 3 letters or digits) whose CRC16 lands on
    s: ``triage:{<tag>}:pending`` is then a key in slot s. Computed once per process (about
    50 ms)."""
    table: list[str | None] = [None] * SLOTS
    left = SLOTS
    alphabet = string.ascii_letters + string.digits
    for size in (1, 2, 3):
        for combo in itertools.product(alphabet, repeat=size):
            tag = "".join(combo)
            slot = key_slot(tag.encode())
            if table[slot] is None:
                table[slot] = tag
                left -= 1
                if not left:
                    return tuple(t for t in table if t is not None)
    raise RuntimeError("no tag found for some cluster slots")  # pragma: no cover


def pending_key_of_slot(slot: int) -> str:
    return f"triage:{{{slot_tags()[slot]}}}:pending"


def pending_key(phone: str) -> str:
    """The pending set of the patient's slot (the commit writes it with the patient's keys)."""
    return pending_key_of_slot(key_slot(phone.encode()))


def moved_key(outbox_id: str) -> str:
    """The marker of a moved outbox entry, in the slot of ``triage:records`` (the move script
    writes the record and its marker in one step)."""
    return f"triage:{{{slot_tags()[key_slot(RECORDS.encode())]}}}:moved:{outbox_id}"


# -- the care team's read indexes (bot/indexes.py)
IDX_CURSOR = "triage:idx:cursor"
IDX_ACTED = "triage:idx:acted"
IDX_ROUTINE = "triage:idx:routine"


def open_key(tier: str) -> str:
    return f"triage:idx:open:{tier}"


def time_key(tier: str) -> str:
    return f"triage:idx:time:{tier}"


def phone_key(phone: str) -> str:
    return f"triage:idx:phone:{{{phone}}}"


# -- the care team
USERS = "triage:users"
PATIENTS = "triage:patients"
AUDIT = "triage:audit"
WEBSESSION_PREFIX = "triage:websession:"


def user_key(username: str) -> str:
    return f"triage:user:{username}"


def fail_key(username: str, client: str) -> str:
    return f"triage:login:fail:{username}:{client}"


def backoff_key(username: str) -> str:
    return f"triage:login:backoff:{username}"


def address_key(address: str) -> str:
    return f"triage:login:addr:{address}"


def spray_key(address: str) -> str:
    return f"triage:login:spray:{address}"


def websession_key(sid: str) -> str:
    """A dashboard session, by a hash of its id (a key listing never shows a live id)."""
    return WEBSESSION_PREFIX + hashlib.sha256(sid.encode()).hexdigest()


# -- shared
def dict_key(dict_id: bytes) -> str:
    return f"triage:zdict:{dict_id.hex()}"
