"""Benchmark: prints measured figures (no assertions). Run with `make bench`.

* start-up: loading and validating flows/ and building the one state machine
* per message: a whole signed webhook request (signature check, Redis WATCH/MULTI transaction,
  engine, TwiML) against a real redis-server, p50/p95/p99 over full fever conversations
* the machine: attaching a saved state and firing a trigger, versus building a Machine per
  message (what DESIGN.md says not to do)
* concurrency: requests per second with 8 threads on a threaded server, 8 patients at once
* memory: resident set size of the process after the run
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from werkzeug.serving import make_server  # noqa: E402

from bot import create_app  # noqa: E402
from bot.cli import signed_post  # noqa: E402
from bot.config import ROOT as BOT_ROOT  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.flows import load_library  # noqa: E402
from conftest import AUTH_TOKEN, BASE_URL, free_port, sign, start_redis_server  # noqa: E402

CONVERSATION = ["fever", "no", "36.9", "no", "no", "no", "1", "no"]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    folder = tempfile.mkdtemp()
    redis_proc, url = start_redis_server(Path(folder))
    try:
        run(url, folder)
    finally:
        redis_proc.terminate()


def run(redis_url: str, folder: str) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")

    t = time.perf_counter()
    lib = load_library(BOT_ROOT / "flows")
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    engine = Engine(lib)
    t_machine = time.perf_counter() - t
    states = len(engine.machine.states)
    print(f"start-up: load+validate {len(lib.flows)} flow files {t_load * 1000:.1f} ms; "
          f"build the machine ({states} states) {t_machine * 1000:.1f} ms")

    # attach + trigger + detach vs a Machine per message
    from bot.engine import Chat, new_session

    n = 2000
    session = new_session()
    session["state"] = "idle"
    t = time.perf_counter()
    for _ in range(n):
        chat = Chat(dict(session))
        engine.machine.add_model(chat, initial="idle")
        engine.machine.remove_model(chat)
    attach_us = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(20):
        engine._build_machine()  # the same states and transitions, built again
    build_us = (time.perf_counter() - t) / 20 * 1e6
    print(f"machine: attach+detach a saved state {attach_us:.0f} us; a new Machine per "
          f"message would cost {build_us:.0f} us")

    app = create_app({"REDIS_URL": redis_url, "INSTANCE_PATH": folder, "APP_ENV": "local",
                      "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SECRET_KEY": "bench",
                      "CARE_TEAM_API_TOKEN": "bench", "PUBLIC_BASE_URL": BASE_URL,
                      "LOG_LEVEL": "WARNING"})
    client = app.test_client()
    latencies: list[float] = []
    conversations = 150
    for _ in range(conversations):
        number = "+1555" + str(uuid.uuid4().int)[:7]
        for body in CONVERSATION:
            form = {"From": number, "To": "+15550009999", "Body": body, "NumMedia": "0",
                    "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "ACbench"}
            headers = {"X-Twilio-Signature": sign(f"{BASE_URL}/sms", form)}
            t = time.perf_counter()
            resp = client.post("/sms", data=form, headers=headers)
            latencies.append((time.perf_counter() - t) * 1000)
            assert resp.status_code == 200
    print(f"webhook, in process, {len(latencies)} messages ({conversations} fever "
          f"conversations): p50 {pct(latencies, 50):.2f} ms, p95 {pct(latencies, 95):.2f} ms, "
          f"p99 {pct(latencies, 99):.2f} ms, max {max(latencies):.2f} ms, "
          f"mean {statistics.mean(latencies):.2f} ms")

    # over HTTP on a threaded server, 8 patients at once
    port = free_port()
    app.config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/sms"
    http_lat: list[float] = []
    lock = threading.Lock()

    def patient(k: int) -> None:
        for _ in range(20):
            number = "+1556" + str(uuid.uuid4().int)[:7]
            for body in CONVERSATION:
                form = {"From": number, "To": "+15550009999", "Body": body, "NumMedia": "0",
                        "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "ACbench"}
                t0 = time.perf_counter()
                status, _ = signed_post(url, AUTH_TOKEN, form)
                with lock:
                    http_lat.append((time.perf_counter() - t0) * 1000)
                assert status == 200

    threads = [threading.Thread(target=patient, args=(k,)) for k in range(8)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    server.shutdown()
    print(f"webhook over HTTP, 8 threads, {len(http_lat)} messages: {len(http_lat) / wall:.0f} "
          f"msg/s, p50 {pct(http_lat, 50):.2f} ms, p95 {pct(http_lat, 95):.2f} ms, "
          f"p99 {pct(http_lat, 99):.2f} ms (client and server share the 2 cores)")

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory: peak RSS of this process (app + test client + server) {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
