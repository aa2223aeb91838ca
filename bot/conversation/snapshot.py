"""The built engine, kept for the next process: start-up (issue 9).

Building the engine is most of a process's start-up: parsing the flow files (YAML), validating
them, and building the reader (about 1,800 wordings made into about 350 patterns). The result
depends only on the flow files, the conversation core's code and the engine's settings, so a
process that built it writes it to the instance folder, and the next process with the same
three loads it instead (a pickle: about 30 ms, against 150 to 250 ms to build).

* **The key** is a SHA-256 of the flow files (every file ``rules_version`` hashes, in full),
  the source of every module of the core (``bot/conversation/*.py`` and the pure modules it
  imports), the Python version, the regex engine's magic number and the engine's settings. A
  change to any of them makes another file; nothing is ever read across versions.
* **The file is signed** (HMAC-SHA256 keyed by the app's ``SECRET_KEY``) and checked before
  anything is unpickled: a file written by anyone without the key is ignored and rebuilt.
* **Compiled patterns** are pickled as the program ``re.compile`` made (``reading._program``),
  not as their text: unpickling hands it to ``_sre.compile`` (which validates it) instead of
  compiling every pattern again.
* Anything unexpected (no folder, a read-only folder, a truncated or foreign file, an
  unpickling error) falls back to building, with the same result.

The lifecycle machine (``transitions``) is not pickled: it is rebuilt on load (6 states).
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import hashlib
import hmac
import io
import logging
import os
import pickle  # nosec B403 # only files signed with the app's SECRET_KEY are loaded
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import reading

log = logging.getLogger(__name__)
FORMAT = b"triage-engine-snapshot-1"
_CORE = Path(__file__).resolve().parent
_PURE = ("sms.py", "clock.py", "profile_fields.py", "rules_version.py")


def code_digest() -> str:
    """SHA-256 over the core's source (name and bytes of each module, in name order)."""
    digest = hashlib.sha256()
    files = sorted(_CORE.glob("*.py")) + [_CORE.parent / name for name in _PURE]
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            data = b"<missing>"
        digest.update(path.name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def key(flows_digest: str, settings: dict[str, Any]) -> str:
    parts = [FORMAT.decode(), flows_digest, code_digest(), sys.version, str(_sre.MAGIC),
             str(_sre.CODESIZE), repr(sorted(settings.items()))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, re.Pattern):
            return reading.pattern_from_program, reading.packed_program(obj)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _sign(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, FORMAT + b"\n" + body, hashlib.sha256).hexdigest().encode()


def load(path: Path, secret: bytes) -> Any | None:
    """The object in ``path`` if the file is there and signed with ``secret``, else None."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    mac, _, body = raw.partition(b"\n")
    if not hmac.compare_digest(mac, _sign(secret, body)):
        log.warning("engine snapshot %s is not signed with this SECRET_KEY: rebuilt",
                    path.name)
        return None
    try:
        return pickle.loads(body)  # nosec B301 # signed above with the app's SECRET_KEY
    except Exception:  # a file from an older core that still verifies: build instead
        log.warning("engine snapshot %s could not be loaded: rebuilt", path.name,
                    exc_info=True)
        return None


def save(path: Path, obj: Any, secret: bytes) -> bool:
    """Write ``obj`` atomically (a temporary file, then a rename); False if it cannot be."""
    try:
        body = dumps(obj)
    except Exception:  # something in the engine does not pickle: no snapshot, no harm
        log.warning("engine snapshot not written: the engine does not pickle", exc_info=True)
        return False
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(_sign(secret, body) + b"\n" + body)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only folder: every start builds
        return False
    return True


def cached(folder: str | Path | None, flows_digest: str, settings: dict[str, Any],
           secret: str | bytes, build: Callable[[], Any]) -> tuple[Any, bool]:
    """``build()``'s result, from the folder when a snapshot of the same flows, code and
    settings is there (and signed with ``secret``); else built and written for the next
    process. Returns (the object, whether it was loaded)."""
    secret_b = secret.encode() if isinstance(secret, str) else secret
    path = Path(folder) / f"engine-{key(flows_digest, settings)[:24]}.pickle" if folder \
        else None
    if path is not None and secret_b:
        found = load(path, secret_b)
        if found is not None:
            return found, True
    made = build()
    if path is not None and secret_b:
        for old in path.parent.glob("engine-*.pickle"):  # other versions' snapshots
            if old != path:
                old.unlink(missing_ok=True)
        save(path, made, secret_b)
    return made, False
