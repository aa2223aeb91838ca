"""The care-read indexes on a real 3-master Redis Cluster (scripts/redis_cluster.py): the
worker's indexing and every read work on a cluster, where every service-wide key (records,
status, escalations, indexes) carries the tag ``{triage}`` (``keys.Layout``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from bot import indexes, keys
from bot.store import RECORDS, STATUS, session_key
from conftest import flush_cluster

C = keys.CLUSTER  # the service-wide key names on a cluster

NOW = time.time()


pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[RedisCluster]:
    flush_cluster(cluster_url)
    client = RedisCluster.from_url(cluster_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def add(r: Any, phone: str, tier: str, ts: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    rec = {"phone": phone, "tier": tier, "flow": "fever", "kind": "completed",
           "conversation_id": f"c{ts}", "created_at": stamp, "started_at": stamp,
           "status": "open"}
    rid = r.xadd(C.RECORDS, {"data": json.dumps(rec)})
    r.hset(C.STATUS, rid, "open")
    return rid


def test_the_cluster_has_three_masters(cluster: RedisCluster) -> None:
    masters = [n for n in cluster.get_nodes() if n.server_type == "primary"]
    assert len(masters) == 3
    assert cluster.cluster_info()["cluster_state"] == "ok"


def test_indexes_and_reads_across_shards(cluster: RedisCluster) -> None:
    r = cluster
    phone = "+15550170001"
    a = add(r, phone, "EMERGENCY", NOW - 300)
    b = add(r, phone, "ROUTINE", NOW - 200)
    c = add(r, "+15550170002", "SOON", NOW - 100)
    indexes.catch_up(r, NOW)
    # the care team's keys: one slot (that of "triage"), not the patient's
    slots = {r.keyslot(C.open_key(t)) for t in indexes.OPEN_TIERS}
    assert slots | {r.keyslot(C.RECORDS), r.keyslot(C.phone_key(phone))} == {
        r.keyslot("triage")}
    assert r.keyslot(C.phone_key(phone)) != r.keyslot(session_key(phone))
    assert r.zrange(indexes.open_key("EMERGENCY"), 0, -1) == []  # one server's name: unused
    assert {x["id"] for x in indexes.unresolved(r, ("open",))} == {a, b, c}
    assert [x["id"] for x in indexes.unresolved(r, ("open",), ("EMERGENCY", "SOON"))] \
        in ([a, c], [c, a])
    assert [x["id"] for x in indexes.patient_records(r, phone)] == [b, a]
    late = add(r, phone, "URGENT", NOW - 10)  # not indexed yet: read from the tail
    assert [x["id"] for x in indexes.patient_records(r, phone)] == [late, b, a]
    # resolved (the status hash and the escalation hash, as escalations.resolve writes them)
    r.hset(C.STATUS, a, "resolved")
    r.hset(C.esc_key(a), mapping={"resolved_at": NOW - 60, "resolved_by": "nina"})
    indexes.catch_up(r, NOW)
    assert r.zrange(C.open_key("EMERGENCY"), 0, -1) == []
    assert r.zrange(C.open_key("URGENT"), 0, -1) == [late]
    day = NOW - 86400
    facts = indexes.overview_facts(r, day, NOW, [day, NOW])
    assert facts["counts"]["EMERGENCY"] == [1] and facts["counts"]["ROUTINE"] == [1]
    acted = [(t, first - created) for t, created, first, _, _ in facts["escalations"]
             if first is not None]
    assert len(acted) == 1 and acted[0][0] == "EMERGENCY"
    assert acted[0][1] == pytest.approx(240, abs=1)  # created_at is kept to the second


def test_the_hot_path_read_runs_on_the_cluster_and_the_commit_is_refused_cross_slot(
        cluster: RedisCluster) -> None:
    """Why a cluster needs its own commit (tests/test_cluster_outbox.py runs it): the read
    script touches one slot; the one-server commit also writes the service-wide records
    stream, status hash and in-flight index, which a cluster refuses."""
    import redis

    from bot.store import (
        _COMMIT,
        _READ,
        INFLIGHT,
        dedup_key,
        meta_key,
        optout_key,
        profile_key,
        texts_key,
    )

    phone = "+15550170003"
    keys = [session_key(phone), meta_key(phone), optout_key(phone), profile_key(phone),
            dedup_key(phone, "SMx"), texts_key(phone)]
    assert len({cluster.keyslot(k) for k in keys}) == 1
    cluster.hset(profile_key(phone), "name", "Jo")
    got = cluster.register_script(_READ)(keys=keys, args=["dabc"])
    assert got[0] is None and got[8] == ["name", "Jo"]
    patient = [session_key(phone), meta_key(phone), texts_key(phone), optout_key(phone)]
    shared = [INFLIGHT, RECORDS, STATUS]
    assert len({cluster.keyslot(k) for k in patient}) == 1
    assert {cluster.keyslot(k) for k in shared} - {cluster.keyslot(patient[0])}
    # redis-py refuses it before sending (a cluster node would answer CROSSSLOT)
    with pytest.raises((redis.RedisError, RedisClusterException), match="slot"):
        cluster.register_script(_COMMIT)(keys=patient + shared, args=[""] * 20)
    # the patient's part alone runs (the outbox design keeps exactly this part in the commit)
    cluster.register_script("redis.call('SET', KEYS[1], 'x') return 1")(keys=patient)
