"""A local Redis Cluster of 3 masters (no replicas) from Debian's redis-server, on loopback.

    .venv/bin/python scripts/redis_cluster.py start /tmp/cluster   # prints a redis:// URL
    .venv/bin/python scripts/redis_cluster.py stop /tmp/cluster

Each node runs in its own folder under the one given (no persistence), the slots are split by
``redis-cli --cluster create``, and ``start`` returns once every node says cluster_state:ok.
``stop`` shuts the nodes down (SIGTERM, by the pids it wrote). Tests import ``start``/``stop``
(tests/test_cluster.py); the care-read indexes are checked against it for real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

NODES = 3


def _free_port() -> int:
    # A cluster node also listens on port + 10000 (the bus): both must be free.
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def start(folder: Path) -> str:
    """Start the 3 masters under ``folder``; return a URL of one node (a cluster client finds
    the others)."""
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if not server or not cli:
        raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    ports, pids = [], []
    for i in range(NODES):
        port = _free_port()
        node = folder / f"node{i}"
        node.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(node / "nodes.conf"), "--cluster-node-timeout",
             "5000", "--save", "", "--appendonly", "no", "--dir", str(node)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ports.append(port)
        pids.append(proc.pid)
    (folder / "cluster.json").write_text(json.dumps({"ports": ports, "pids": pids}))
    for port in ports:
        _wait(lambda p=port: redis.Redis(port=p).ping())
    subprocess.run(
        [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
         "--cluster-replicas", "0", "--cluster-yes"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    for port in ports:
        _wait(lambda p=port: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok")
    return f"redis://127.0.0.1:{ports[0]}/0"


def _wait(check: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the cluster did not come up")


def stop(folder: Path) -> None:
    try:
        pids = json.loads((folder / "cluster.json").read_text())["pids"]
    except (OSError, ValueError, KeyError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 15
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:  # our own child (tests): reap it
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.05)
    (folder / "cluster.json").unlink(missing_ok=True)


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: redis_cluster.py start|stop FOLDER")
    folder = Path(sys.argv[2])
    if sys.argv[1] == "start":
        print(start(folder))
    else:
        stop(folder)


if __name__ == "__main__":
    main()
