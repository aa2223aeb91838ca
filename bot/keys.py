"""Every Redis key the service uses, in one place: the one owner of key formats.

Keys that belong to one patient carry the patient's number as a hash tag (``{+1555...}``), so
that everything a message writes for that patient lands in one Redis Cluster slot. The
service-wide keys (records, escalations, due sets, indexes, the care team) depend on the
deployment's layout (``Layout``): on one Redis server they have the names below, as they
always had; on a Redis Cluster (setting ``REDIS_CLUSTER``) the same names start with
``{triage}:`` instead of ``triage:`` (``{triage}:records``, ``{triage}:esc:<id>``,
``{triage}:escalation:{<phone>}:<episode>``...): one hash tag, one slot, so that every
transaction and script of the pager and the care team stays in one slot. Code that holds a
client asks ``of(r)`` for them at call time; the module constants below are one server's.

| key (one server; on a cluster ``{triage}:`` for ``triage:`` where marked *) | type | owner |
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
| ``{triage}:moved:<outbox id>`` | string | store (Redis Cluster only): a moved entry |
| ``triage:records`` * | stream | store: triage records (consumer group: the pager) |
| ``triage:status`` * | hash | store, escalations: record id -> open/acknowledged/resolved |
| ``triage:inflight`` | zset | store (one server): patients with a question pending |
| ``triage:esc:<id>`` and ``:events``, ``:members``, ``:pages``, ``:delivery``, ``:voice`` * |
  hash, list, set | escalations, paging, notify, voice |
| ``triage:escalation:{<phone>}:<episode>`` * | string | paging: the episode's escalation |
| ``triage:episode:{<phone>}:<episode>`` and ``:events`` * | hash/list | escalations |
| ``triage:pages:due`` / ``triage:pages:deadline`` * | zset | paging |
| ``triage:deadletter`` * | list | paging: records that could not be read |
| ``triage:followups`` / ``triage:followup:conv:<id>`` * | zset/string | followup |
| ``triage:voice:due`` / ``:waiting`` / ``:line:<id>`` * | zset/hash | voice |
| ``triage:idx:*`` * | zsets, string | indexes: care-read indexes fed by the worker |
| ``triage:users`` / ``triage:user:<name>`` * | set/hash | users |
| ``triage:patients`` * | set | profile: every enrolled number |
| ``triage:audit`` * | stream | audit |
| ``triage:login:*`` | strings | users, dashboard.throttle: lockouts and limits (single-key) |
| ``triage:websession:*`` | strings | dashboard.sessions: dashboard sessions (single-key) |
| ``triage:zdict:<id>`` | string | textcodec: the compression dictionary of a rules version |

Redis Cluster (setting ``REDIS_CLUSTER``) only: a message's records go to the patient's
outbox (outbox id ``<ms base 36>-<n>-<16 hex>`` -> ``<status>|<record JSON>``), and the
slot's pending set (the tag of slot s is a 1 to 3 character string whose CRC16 lands on s,
``slot_tags``) holds ``o<phone>`` (score 0) while the patient has an outbox and ``a<phone>``
(score: last message time) while a checklist is open (the in-flight index of one server).
``moved`` markers (in the slot of ``{triage}:records``) keep an entry from being added twice;
they expire after 7 days. Keys a development cluster holds under the names used before the
``{triage}`` tag are not migrated (a cluster was never allowed in production).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import string

from redis.cluster import RedisCluster
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


# -- records and what happens to them, and the care team: the service-wide keys
#
# Their names depend on the deployment's layout (``Layout``): on one Redis server (or a Sentinel
# primary) they are the names the service has always used (``triage:records``...); on a Redis
# Cluster every one of them carries the common hash tag ``{triage}`` (``{triage}:records``...)
# so that every transaction and script of the pager and the care team is in one slot. The
# layout follows the client the store made from the setting ``REDIS_CLUSTER`` (``of``): code
# that holds a client asks ``of(r)`` for a key at call time, never a module constant.


class Layout:
    """The service-wide key names of one deployment. ``ONE``: one Redis server, the names as
    they have always been (no migration); ``CLUSTER``: the same names with the prefix
    ``{triage}:`` instead of ``triage:`` (one slot for all of them; a key that also names a
    patient, ``{triage}:escalation:{+1555...}:<episode>``, hashes on its first tag only)."""

    __slots__ = (
        "AUDIT",
        "DEADLINES",
        "DEAD_LETTERS",
        "DUE",
        "FOLLOWUPS",
        "IDX_ACTED",
        "IDX_CURSOR",
        "IDX_ROUTINE",
        "INFLIGHT",
        "PATIENTS",
        "RECORDS",
        "STATUS",
        "USERS",
        "VOICE_DUE",
        "VOICE_WAITING",
        "cluster",
        "prefix",
    )

    def __init__(self, cluster: bool):
        self.cluster = cluster
        p = self.prefix = "{triage}:" if cluster else "triage:"
        self.RECORDS = p + "records"
        self.STATUS = p + "status"
        self.INFLIGHT = p + "inflight"  # one server only (a cluster: the per-slot pending sets)
        self.DUE = p + "pages:due"
        self.DEADLINES = p + "pages:deadline"
        self.DEAD_LETTERS = p + "deadletter"  # list: records that could not be read (JSON)
        self.FOLLOWUPS = p + "followups"
        self.VOICE_DUE = p + "voice:due"
        self.VOICE_WAITING = p + "voice:waiting"  # record id -> since when it waits for a phone
        self.IDX_CURSOR = p + "idx:cursor"
        self.IDX_ACTED = p + "idx:acted"
        self.IDX_ROUTINE = p + "idx:routine"
        self.USERS = p + "users"
        self.PATIENTS = p + "patients"
        self.AUDIT = p + "audit"

    def __repr__(self) -> str:
        return f"Layout(cluster={self.cluster})"

    def esc_key(self, rid: str) -> str:
        return f"{self.prefix}esc:{rid}"

    def events_key(self, rid: str) -> str:
        return f"{self.prefix}esc:{rid}:events"

    def members_key(self, rid: str) -> str:
        return f"{self.prefix}esc:{rid}:members"

    def ledger_key(self, rid: str) -> str:
        return f"{self.prefix}esc:{rid}:pages"

    def delivery_key(self, rid: str) -> str:
        return f"{self.prefix}esc:{rid}:delivery"

    def voice_key(self, rid: str) -> str:
        return f"{self.prefix}esc:{rid}:voice"

    def line_key(self, line_id: str) -> str:
        return f"{self.prefix}voice:line:{line_id}"

    def link_key(self, conversation_id: str) -> str:
        return f"{self.prefix}followup:conv:{conversation_id}"

    def holder_key(self, phone: str, episode: str) -> str:
        """The record holding the conversation's escalation."""
        return f"{self.prefix}escalation:{{{phone}}}:{episode}"

    def episode_key(self, phone: str, episode: str) -> str:
        return f"{self.prefix}episode:{{{phone}}}:{episode}"

    def episode_events_key(self, phone: str, episode: str) -> str:
        return self.episode_key(phone, episode) + ":events"

    def open_key(self, tier: str) -> str:
        return f"{self.prefix}idx:open:{tier}"

    def time_key(self, tier: str) -> str:
        return f"{self.prefix}idx:time:{tier}"

    def phone_key(self, phone: str) -> str:
        return f"{self.prefix}idx:phone:{{{phone}}}"

    def user_key(self, username: str) -> str:
        return f"{self.prefix}user:{username}"


ONE = Layout(cluster=False)
CLUSTER = Layout(cluster=True)


def layout(cluster: bool) -> Layout:
    """The layout the setting ``REDIS_CLUSTER`` chooses."""
    return CLUSTER if cluster else ONE


def of(client: object) -> Layout:
    """The layout of the deployment ``client`` (a client, a pipeline) talks to: ``CLUSTER``
    for redis-py's cluster client and its pipelines (and the store's stand-ins for one, which
    say so with a class attribute ``cluster_layout``), ``ONE`` for everything else. The store
    makes a cluster client exactly when the setting ``REDIS_CLUSTER`` is on, so the layout is
    chosen once, at start-up, from the setting, and never from what a server says."""
    if isinstance(client, RedisCluster) or getattr(type(client), "cluster_layout", False):
        return CLUSTER
    return ONE


# The one-server names as module constants and functions (the names every deployment on one
# server has; tests and older imports read them). The service's own code asks ``of(r)``.
RECORDS = ONE.RECORDS
STATUS = ONE.STATUS
INFLIGHT = ONE.INFLIGHT
DUE = ONE.DUE
DEADLINES = ONE.DEADLINES
DEAD_LETTERS = ONE.DEAD_LETTERS
FOLLOWUPS = ONE.FOLLOWUPS
VOICE_DUE = ONE.VOICE_DUE
VOICE_WAITING = ONE.VOICE_WAITING
esc_key = ONE.esc_key
events_key = ONE.events_key
members_key = ONE.members_key
ledger_key = ONE.ledger_key
delivery_key = ONE.delivery_key
voice_key = ONE.voice_key
line_key = ONE.line_key
link_key = ONE.link_key
holder_key = ONE.holder_key
episode_key = ONE.episode_key
episode_events_key = ONE.episode_events_key


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
    """The marker of a moved outbox entry (Redis Cluster only), in the slot of the records
    stream ``{triage}:records`` (the move script writes the record and its marker in one
    step)."""
    return f"{CLUSTER.prefix}moved:{outbox_id}"


# -- the care team's read indexes (bot/indexes.py), one server's names
IDX_CURSOR = ONE.IDX_CURSOR
IDX_ACTED = ONE.IDX_ACTED
IDX_ROUTINE = ONE.IDX_ROUTINE
open_key = ONE.open_key
time_key = ONE.time_key
phone_key = ONE.phone_key

# -- the care team (the sign-in limits and the web sessions are single-key: any slot)
USERS = ONE.USERS
PATIENTS = ONE.PATIENTS
AUDIT = ONE.AUDIT
WEBSESSION_PREFIX = "triage:websession:"


user_key = ONE.user_key


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
