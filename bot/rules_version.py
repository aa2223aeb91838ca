"""Which rules produced a record: the flows' human version plus a hash of their content.

``rules_version(flows_dir)`` is ``"<flows/VERSION>+<8 hex digits>"``, for example
``"2026-11-26.1+3f9a2c1d"``. The human part is the one line of ``flows/VERSION``, bumped by
the clinical reviewer at sign-off (docs/clinical-review.md). The hash covers every flow file
the service loads (``*.yaml`` in the flows folder, in name order: each file's name and bytes),
so any edit, even one nobody remembered to give a new version, gives a different string.
``create_app`` computes it once at start-up and keeps it in ``app.extensions["rules_version"]``;
every triage record carries it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VERSION_FILE = "VERSION"
UNVERSIONED = "unversioned"
HASH_CHARS = 8
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class RulesVersionError(ValueError):
    """flows/VERSION is not one short line of letters, digits, '.', '_' or '-'."""


def flow_files(flows_dir: str | Path) -> list[Path]:
    """The files whose content makes the rules: the same ``*.yaml`` the loader reads, and the
    reader's language files (``language/``: ConText words, the English word list)."""
    base = Path(flows_dir)
    files = [*base.glob("*.yaml"), *(p for p in base.glob("language/*") if p.is_file())]
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def content_hash(flows_dir: str | Path) -> str:
    """sha256 over (name, length, bytes) of every flow file, in name order; 8 hex digits.
    Names are hashed too: renaming a checklist file renames the checklist."""
    return full_digest(flows_dir)[:HASH_CHARS]


def full_digest(flows_dir: str | Path) -> str:
    """``content_hash`` in full (64 hex digits): with the human version, the key of anything
    built from the flows (``bot/conversation/snapshot.py``)."""
    digest = hashlib.sha256()
    for path in flow_files(flows_dir):
        data = path.read_bytes()
        name = (path.name if path.parent == Path(flows_dir) else
                f"{path.parent.name}/{path.name}").encode()
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def human_version(flows_dir: str | Path) -> str:
    """The one line of ``flows/VERSION``; ``"unversioned"`` when the file is absent (a
    reviewer's scratch copy of the flows). A malformed file stops the service."""
    path = Path(flows_dir) / VERSION_FILE
    if not path.exists():
        return UNVERSIONED
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if len(lines) != 1 or not _VERSION_RE.match(lines[0]):
        raise RulesVersionError(
            f"{path}: must be one line such as 2026-11-26.1 (letters, digits, '.', '_', '-'; "
            f"at most 40 characters), found {lines!r}")
    return lines[0]


def rules_version(flows_dir: str | Path) -> str:
    """``"<human version>+<content hash>"``, e.g. ``"2026-11-26.1+3f9a2c1d"``."""
    return versioned(flows_dir)[0]


def versioned(flows_dir: str | Path) -> tuple[str, str]:
    """``rules_version`` and ``full_digest`` from one reading of the files."""
    digest = full_digest(flows_dir)
    return f"{human_version(flows_dir)}+{digest[:HASH_CHARS]}", digest
