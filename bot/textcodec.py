"""Compact storage of the service's own texts in Redis (issue 9, memory per patient).

Almost every byte the service keeps per patient is its own wording: the questions and advice
it sent (the transcript, the reply cached for Twilio's retries) and the session. All of it is
made of the clinical content's sentences, so it is compressed with raw DEFLATE primed with a
*dictionary* made of those sentences (``zlib``'s ``zdict``): a 250-character reply is stored
in about 10 bytes, a 1 KB session in about 400.

* The dictionary is built from the string values of the flow files (``FLOWS_DIR/*.yaml``,
  sentences only), deterministically: every process running the same clinical rules builds
  the same bytes. Its id is the first 4 bytes of its SHA-256.
* Every stored value names its dictionary: ``MARK + id + deflate``. A process decoding a value
  of another id (written before the flows changed) fetches that dictionary from Redis
  (``triage:zdict:<hex id>``, written at start-up, never expires, a few KB per rules
  version); the dictionary's bytes are checked against the id before use.
* Nothing depends on the dictionary for correctness, only for size: a text absent from it is
  still stored exactly (deflate is lossless), just less compactly.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any

from .keys import dict_key  # noqa: F401

MARK = b"\x01"  # never the first byte of JSON or of a text this service writes
ID_BYTES = 4
WINDOW = 32 * 1024  # deflate can refer back this far: the dictionary's useful size
_MIN_CHARS, _MIN_SPACES = 20, 3  # sentences, not the wordings lists
REPLY_CHARS, REPLIES_KEPT = 480, 2048  # 3 segments at most; ~1.5 MB a process at worst


def _strings(node: Any, out: list[str]) -> None:
    if isinstance(node, str):
        text = " ".join(node.split())
        if len(text) >= _MIN_CHARS and text.count(" ") >= _MIN_SPACES:
            out.append(text)
    elif isinstance(node, dict):
        for value in node.values():
            _strings(value, out)
    elif isinstance(node, list):
        for value in node:
            _strings(value, out)


def build_dictionary(flows_dir: str | Path) -> bytes:
    """The sentences of the clinical content, the most useful last (deflate prefers nothing,
    but only the last 32 KB are reachable): files in name order, each sentence once."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found: list[str] = []
    for path in sorted(Path(flows_dir).glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            _strings(yaml.load(fh, Loader=loader), found)  # nosec B506 # a safe loader
    data = "\n".join(dict.fromkeys(found)).encode()
    return data[-WINDOW:]


_BUILD = f"{_MIN_CHARS}.{_MIN_SPACES}.{WINDOW}.1"  # how build_dictionary chooses


def cached_dictionary(flows_dir: str | Path, rules_version: str, folder: str | Path) -> bytes:
    """``build_dictionary``, kept in ``folder`` per rules version (whose content hash covers
    every flow file): parsing the flow files a second time cost ~17 ms of each start-up. A
    file whose SHA-256 does not match is built again; an unwritable folder only costs time."""
    tag = hashlib.sha256(f"{_BUILD}|{rules_version}".encode()).hexdigest()[:16]
    path = Path(folder) / f"text-dictionary-{tag}.bin"
    try:
        digest, _, data = path.read_bytes().partition(b"\n")
        if hashlib.sha256(data).hexdigest().encode() == digest:
            return data
    except OSError:
        pass
    data = build_dictionary(flows_dir)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
    return data


class Codec:
    """Encode with this process's dictionary; decode with any (``lookup`` finds others)."""

    def __init__(self, zdict: bytes):
        self.zdict = zdict
        self.id = hashlib.sha256(zdict).digest()[:ID_BYTES]
        self._dicts: dict[bytes, bytes] = {self.id: zdict}
        # A compressor primed with the dictionary once; each value copies it (~10 us instead
        # of ~150 us to load the dictionary again). zlib's default level and memory: level 1
        # halved the time (10 instead of 21 us a session) but stored the flows' replies in 4x
        # the bytes (516 instead of 131 for a fever conversation; measured), a third more
        # Redis per idle patient.
        self._primed = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY,
                                        zdict=zdict)
        # The service's own replies repeat all day (the flows' questions): each is
        # compressed once per process (at most REPLIES_KEPT of them, each short).
        self._replies: dict[str, bytes] = {}

    def encode(self, text: str) -> bytes:
        c = self._primed.copy()
        return MARK + self.id + c.compress(text.encode()) + c.flush()

    def encode_reply(self, text: str) -> bytes:
        """``encode``, remembered for replies of up to REPLY_CHARS characters."""
        found = self._replies.get(text)
        if found is None:
            found = self.encode(text)
            if len(text) <= REPLY_CHARS and len(self._replies) < REPLIES_KEPT:
                self._replies[text] = found
        return found

    def known(self, dict_id: bytes) -> bool:
        return dict_id in self._dicts

    def learn(self, zdict: bytes) -> bytes:
        """Add a dictionary fetched from Redis; returns its id (from its own bytes)."""
        dict_id = hashlib.sha256(zdict).digest()[:ID_BYTES]
        self._dicts[dict_id] = zdict
        return dict_id

    @staticmethod
    def dict_id(blob: bytes) -> bytes | None:
        """The dictionary a stored value needs, or None for a plain (uncompressed) value."""
        if blob[:1] != MARK or len(blob) < 1 + ID_BYTES:
            return None
        return blob[1:1 + ID_BYTES]

    def decode(self, blob: bytes) -> str:
        """A stored value as text: plain UTF-8, or compressed with a known dictionary.
        Raises KeyError for an unknown dictionary (fetch it, ``learn`` it, try again)."""
        dict_id = self.dict_id(blob)
        if dict_id is None:
            return blob.decode("utf-8", errors="replace")
        d = zlib.decompressobj(-15, zdict=self._dicts[dict_id])
        return (d.decompress(blob[1 + ID_BYTES:]) + d.flush()).decode("utf-8")
