"""What paging costs on one Redis server and on a local 3-master Redis Cluster: round trips and
commands per escalation paged and per acknowledgement, and (on the cluster) the share that
lands on the shard holding ``{triage}``, the one slot of every service-wide key.

    .venv/bin/python scripts/cluster_paging_cost.py [--records 50]

In process, on loopback: N signed webhook conversations end URGENT (each pages 2 on-call
numbers through an in-memory SMS backend), then one worker tick reads and pages them all;
the cost of an idle tick (the same tick with nothing to do: on a cluster it includes the
relay's scan of the 16,384 per-slot pending sets) is measured first and taken off. Round trips
are socket writes (a pipeline to two masters is two), commands come from INFO commandstats
summed over the masters. Prints a table; asserts nothing timed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench
import redis_cluster

ON_CALL = "+15550001111,+15550002222"
URGENT = ["fever", "no", "38.6"]


class Sms:
    """Outbound texts in memory (the cost measured is Redis's, not a carrier's)."""

    name = "memory"

    def __init__(self) -> None:
        self.sent = 0

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        self.sent += 1
        return f"SM{self.sent}"

    def call(self, to: str, twiml: str, status_callback: str | None = None,
             ring_seconds: int = 30) -> str:
        return "CA1"


def per_master(url: str, cluster: bool) -> dict[str, dict[str, int]]:
    """INFO commandstats of every master (one server: the server), by node name."""
    if not cluster:
        return {"one": bench.commandstats(redis.Redis.from_url(url))}
    client = redis.RedisCluster.from_url(url)
    try:
        out = {}
        for node in client.get_primaries():
            conn = redis.Redis(host=node.host, port=node.port)
            out[node.name] = bench.commandstats(conn)
            conn.close()
        return out
    finally:
        client.close()


def cpu_of(url: str, cluster: bool, name: str) -> float:
    """CPU seconds (user + system) the server (the master ``name`` of a cluster) has used."""
    if cluster:
        host, port = name.rsplit(":", 1)
        conn = redis.Redis(host=host, port=int(port))
    else:
        conn = redis.Redis.from_url(url)
    info = conn.info("cpu")
    conn.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def triage_master(url: str) -> str:
    client = redis.RedisCluster.from_url(url)
    try:
        return str(client.nodes_manager.get_node_from_slot(key_slot(b"triage")).name)
    finally:
        client.close()


class Trips:
    n = 0


def counted(fn: Any) -> tuple[int, Any]:
    """Socket writes to Redis while ``fn`` runs, and what it returned."""
    real = redis.Connection.send_packed_command

    def counting(conn: Any, command: Any, check_health: bool = True) -> None:
        Trips.n += 1
        real(conn, command, check_health)

    Trips.n = 0
    redis.Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        got = fn()
    finally:
        redis.Connection.send_packed_command = real  # type: ignore[method-assign]
    return Trips.n, got


def measure(url: str, cluster: bool, folder: Path, n: int) -> dict[str, float]:
    from bot import create_app, escalations
    from bot.worker import tick

    app = create_app({**bench.app_settings(url, folder), "REDIS_CLUSTER": cluster,
                      "ON_CALL_NUMBERS": ON_CALL})
    logging.getLogger().setLevel(logging.ERROR)
    sms = Sms()
    app.extensions["sms"] = sms
    client = app.test_client()
    now = time.time()
    tick(app, now)  # scripts loaded, consumer group made, first relay scan done
    for i in range(n):
        phone = f"+1555970{i:04d}"
        for step, body in enumerate(URGENT):
            resp = bench.signed(client, phone, body, f"SM97{i:05d}{step:02d}{'0' * 23}")
            assert resp.status_code == 200, resp.status_code

    def tick_cost(at: float) -> tuple[int, dict[str, int], dict[str, int]]:
        before = per_master(url, cluster)
        trips, done = counted(lambda: tick(app, at))
        after = per_master(url, cluster)
        return trips, {k: bench.delta(after[k], before[k]) for k in after}, done

    # the tick that pages them all, then an idle one (what every tick costs) to take off
    hot = triage_master(url) if cluster else "one"
    cpu0 = cpu_of(url, cluster, hot)
    trips_page, cmds_page, done = tick_cost(now + 1)
    cpu_page = cpu_of(url, cluster, hot) - cpu0
    assert done["records"] == n and done["pages"] == n, done
    assert sms.sent == 2 * n
    cpu0 = cpu_of(url, cluster, hot)
    trips_idle, cmds_idle, _ = tick_cost(now + 2)
    cpu_idle = cpu_of(url, cluster, hot) - cpu0
    store = app.extensions["triage"].store
    rids = [rec["id"] for rec in store.records(limit=n)]
    before = per_master(url, cluster)
    trips_ack, _ = counted(lambda: [escalations.acknowledge(store.r, rid, "nina", now + 3)
                                          for rid in rids])
    after = per_master(url, cluster)
    cmds_ack = {k: bench.delta(after[k], before[k]) for k in after}
    page_cmds = sum(cmds_page.values()) - sum(cmds_idle.values())
    return {
        "trips_per_page": (trips_page - trips_idle) / n,
        "commands_per_page": page_cmds / n,
        "triage_share_page": (cmds_page[hot] - cmds_idle[hot]) / page_cmds,
        "cpu_ms_per_page": max(0.0, cpu_page - cpu_idle) * 1000 / n,
        "idle_tick_trips": trips_idle, "idle_tick_commands": sum(cmds_idle.values()),
        "trips_per_ack": trips_ack / n,
        "commands_per_ack": sum(cmds_ack.values()) / n,
        "triage_share_ack": cmds_ack[hot] / max(1, sum(cmds_ack.values())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cluster-paging-") as tmp:
        folder = Path(tmp)
        with bench.redis_server(folder / "one") as url:
            one = measure(url, False, folder / "a", args.records)
        url = redis_cluster.start(folder / "cluster")
        try:
            clustered = measure(url, True, folder / "b", args.records)
        finally:
            redis_cluster.stop(folder / "cluster")
    rows = [
        ("round trips per page (record read, routed, paged to 2 numbers)",
         "trips_per_page", "{:.1f}"),
        ("commands per page", "commands_per_page", "{:.1f}"),
        ("  of which on the {triage} shard", "triage_share_page", "{:.0%}"),
        ("Redis CPU per page on that shard (INFO cpu, ms)", "cpu_ms_per_page", "{:.2f}"),
        ("round trips per acknowledgement", "trips_per_ack", "{:.1f}"),
        ("commands per acknowledgement", "commands_per_ack", "{:.1f}"),
        ("  of which on the {triage} shard", "triage_share_ack", "{:.0%}"),
        ("an idle tick: round trips", "idle_tick_trips", "{:.0f}"),
        ("an idle tick: commands", "idle_tick_commands", "{:.0f}"),
    ]
    print(f"{args.records} URGENT records, 2 on-call numbers")
    print("| | one server | 3-master cluster |\n|---|---|---|")
    for label, key, fmt in rows:
        print(f"| {label} | {fmt.format(one[key])} | {fmt.format(clustered[key])} |")


if __name__ == "__main__":
    main()
