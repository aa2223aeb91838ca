"""The outage spool: texts that arrived while Redis was unreachable, on local disk.

Each process appends to its own file ``<SPOOL_DIR>/inbound-<pid>.jsonl`` (one JSON line per
text: phone, MessageSid, body, media count, time received), under an exclusive ``flock``, and
fsyncs the file (and, for a new file, the folder) before the patient's reply is returned. So a
text the patient was answered for is on disk even if the process or the machine dies next.

``replay`` (the worker each tick; a web process in a background thread once Redis answers
again) takes one file at a time: renames it to ``claimed-...`` under its lock (a writer that
was waiting for that lock notices the rename and opens a fresh file), then hands every line to
the normal message path. Replaying is idempotent: the MessageSid's reply key makes a text
already replayed a no-op, so a claimed file left by a replayer that died is simply replayed
again. Only one replayer runs at a time per folder (``replay.lock``). A file is deleted only
when every line in it went through.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


UNREPLAYABLE = "unreplayable.txt"


class Spool:
    def __init__(self, folder: str | os.PathLike[str],
                 retry_on: tuple[type[BaseException], ...] = (OSError,)):
        self.folder = Path(folder)
        self.retry_on = retry_on
        self._empty_since: int | None = None  # the folder's mtime when last listed empty

    def _set_aside(self, raw: str) -> None:
        fd = os.open(self.folder / UNREPLAYABLE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (raw.rstrip("\n") + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def unreplayable(self) -> int:
        try:
            return sum(1 for _ in (self.folder / UNREPLAYABLE).open("rb"))
        except FileNotFoundError:
            return 0

    def _dir_fsync(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, phone: str, sid: str | None, body: str, num_media: int, at: float) -> str:
        """Write one inbound text durably; returns the MessageSid it is replayed under."""
        sid = sid or f"spool-{uuid.uuid4().hex}"
        line = json.dumps({"phone": phone, "sid": sid, "body": body, "num_media": num_media,
                           "at": at}, separators=(",", ":")) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"inbound-{os.getpid()}.jsonl"
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # a replayer claimed this file meanwhile: write to a new one
                    continue
                new = os.fstat(fd).st_size == 0
                os.write(fd, line.encode())
                os.fsync(fd)
                if new:
                    self._dir_fsync()
                return sid
            finally:
                os.close(fd)

    def pending(self) -> bool:
        """Is any text spooled? Asked after every message a web process answers, so the folder
        is listed only when it changed: a file created, renamed or deleted in it changes its
        modification time, and a folder listed with no spool file whose time is still the
        same has none (one ``stat`` instead of a listing). That answer is kept only for a
        folder whose time was more than a second old when it was listed, so a file created
        in the same tick of the file system's clock as the listing is never missed."""
        try:
            mtime = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._empty_since:
            return False
        listed_at = time.time_ns()
        try:
            found = any(name.endswith(".jsonl") for name in os.listdir(self.folder))
        except FileNotFoundError:
            return False
        self._empty_since = None
        if not found and listed_at - mtime > 1_000_000_000:
            self._empty_since = mtime
        return found

    def count(self) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for p in self.folder.glob("*.jsonl"):
                with contextlib.suppress(OSError):
                    total += sum(1 for _ in p.open("rb"))
        return total

    def _claim(self, path: Path) -> Path | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
                return None
            claimed = self.folder / f"claimed-{uuid.uuid4().hex}.jsonl"
            os.rename(path, claimed)
            self._dir_fsync()
            return claimed
        finally:
            os.close(fd)

    def replay(self, handle: Callable[[dict[str, Any]], Any]) -> int:
        """Hand every spooled text to ``handle`` (which raises if it could not be stored);
        returns how many went through. Stops at the first failure, keeping the rest."""
        if not self.pending():
            return 0
        with (self.folder / "replay.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is replaying
            done = 0
            for path in sorted(self.folder.glob("inbound-*.jsonl")):
                self._claim(path)
            for claimed in sorted(self.folder.glob("claimed-*.jsonl"),
                                  key=lambda p: p.stat().st_mtime):
                for raw in claimed.read_text().splitlines():
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        log.error("spool: an unreadable line in %s skipped (torn write)",
                                  claimed.name)
                        continue
                    try:
                        handle(entry)
                    except self.retry_on:
                        raise  # Redis failed again: the file is kept, replayed again later
                    except Exception:
                        # not Redis: a bug this text would hit every time; set it aside
                        # (kept on disk, named on /healthz) instead of blocking the others
                        log.exception("spool: a text could not be replayed; kept in %s",
                                      UNREPLAYABLE)
                        self._set_aside(raw)
                        continue
                    done += 1
                claimed.unlink()
                self._dir_fsync()
            if done:
                log.warning("spool: %s text(s) received during the Redis outage replayed", done)
            return done
