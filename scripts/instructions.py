"""Instructions a request, under gunicorn, counted by valgrind: a figure a shared machine's load
does not move (wrk's requests/s moved by more than 10% between runs here, so a change worth
5% could not be seen with it).

For the service (``wsgi:app``) and the benchmark's baseline (``scripts/bench_baseline.py``),
each under the project's ``gunicorn.conf.py`` with one worker, against a real redis-server:
gunicorn runs under ``valgrind --tool=callgrind``, a client sends ``--small`` and then
``--large`` whole fever conversations (the benchmark's), one request at a time, each on a new
connection (the sync worker closes every one). The worker's user-space instructions for the
large run minus the small run, over the requests between them, is what one request costs the
web process: gunicorn's parsing and access log, the app, the Redis client; start-up and the
first requests' caches cancel out. Redis's own work and the client's are not counted.

    .venv/bin/python scripts/instructions.py            # needs valgrind (Debian: valgrind)

Takes a few minutes (valgrind runs the code about 50 times slower). docs/performance.md has
the figures and how to read them.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import re
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    AUTH_TOKEN,
    BASE_URL,
    CONVERSATION,
    gunicorn,
    redis_server,
    service_env,
)
from twilio.request_validator import RequestValidator

APPS = (("baseline", "bench_baseline:app"), ("service", "wsgi:app"))


def post(port: int, form: dict[str, str], signer: RequestValidator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/sms", body=urlencode(form), headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signer.compute_signature(f"{BASE_URL}/sms", form)})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"/sms answered {resp.status}")
    finally:
        conn.close()


def worker_instructions(app: str, env: dict[str, str], conversations: int, folder: Path,
                        batch: int) -> int:
    """The worker's instructions from its fork to its exit (callgrind counts a forked child
    from the fork on, with the parent's counts before it, so the master's are subtracted)."""
    out = folder / f"{app.split(':')[0]}-{conversations}"
    out.mkdir(parents=True)
    valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                f"--callgrind-out-file={out}/cg.%p"]
    with gunicorn(app, env, out / "log", workers=1, wrap=valgrind, extra=["--timeout", "600"],
                  start_within=600, stop_within=300) as (port, _, _):
        signer = RequestValidator(AUTH_TOKEN)
        k = 0
        for c in range(conversations):
            for body in CONVERSATION:
                k += 1
                post(port, {"From": f"+1555{batch:02d}{c:05d}", "To": "+15550009999",
                            "Body": body, "NumMedia": "0", "AccountSid": "ACinstructions",
                            "MessageSid": f"SM{batch:02d}{k:030d}"}, signer)
    totals = []
    for path in glob.glob(str(out / "cg.*")):
        text = Path(path).read_text(errors="replace")
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if found and "gunicorn" in text[:2000]:
            totals.append(int(found.group(1)))
    if len(totals) < 2:
        raise RuntimeError(f"expected a master's and a worker's counts in {out}")
    totals.sort()
    return totals[-1] - totals[-2]  # the worker (with the master's counts) minus the master


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=5, help="conversations in the short run")
    ap.add_argument("--large", type=int, default=25, help="conversations in the long run")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("instructions: valgrind is not installed (Debian: apt-get install valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="triage-instructions-"))
    requests = (args.large - args.small) * len(CONVERSATION)
    rows: dict[str, float] = {}
    try:
        with redis_server(folder / "redis") as url:
            env = service_env(url, folder)
            batch = 0
            for name, app in APPS:
                counts = []
                for n in (args.small, args.large):
                    batch += 1
                    counts.append(worker_instructions(app, env, n, folder, batch))
                rows[name] = (counts[1] - counts[0]) / requests
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"instructions a request in the gunicorn worker (callgrind; {args.large} minus "
          f"{args.small} whole fever conversations, {requests} requests)")
    for name, value in rows.items():
        print(f"  {name:9s} {value / 1e6:6.2f} M")
    print(f"  baseline/service {rows['baseline'] / rows['service']:.2f}x")


if __name__ == "__main__":
    main()
