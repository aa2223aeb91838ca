"""Issue 9 item 4: start-up. The reader's compiled patterns are kept between processes (a file
in the instance folder); a reader built from that file reads every corpus text exactly as one
built by ``re.compile``, and a damaged file is never used. The gunicorn config builds the app
once, before forking its workers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from bot.conversation import reading
from bot.conversation.corpus import load, reader_for
from bot.conversation.flows import load_library

ROOT = Path(__file__).resolve().parent.parent


def fresh_reader(monkeypatch: Any, folder: Path | None) -> reading.Reader:
    monkeypatch.setattr(reading, "PATTERN_CACHE_DIR", str(folder) if folder else None)
    monkeypatch.setattr(reading, "_compiled", {})  # no in-process memo: the build path itself
    return reader_for(load_library(ROOT / "flows"))


def same(a: reading.Reading, b: reading.Reading) -> bool:
    return (a.findings, a.values, a.value_words, a.caregiver, a.question, a.tokens) == (
        b.findings, b.values, b.value_words, b.caregiver, b.question, b.tokens)


def test_a_reader_from_the_pattern_file_reads_the_corpus_exactly_as_re_compile(
        monkeypatch: Any, tmp_path: Path) -> None:
    plain = fresh_reader(monkeypatch, None)
    cold = fresh_reader(monkeypatch, tmp_path)  # compiles the programs, writes the file
    files = list(tmp_path.glob("reader-patterns-*.json"))
    assert len(files) == 1
    loaded_from_file: list[Any] = []
    real = reading._from_program

    def spy(entry: list[Any]) -> Any:
        loaded_from_file.append(entry[0])
        return real(entry)

    monkeypatch.setattr(reading, "_from_program", spy)
    cached = fresh_reader(monkeypatch, tmp_path)
    assert len(loaded_from_file) == len(cached._patterns) + sum(
        1 for _, _, nx in cached._patterns if nx is not None)  # every pattern from the file
    for (c1, rx1, nx1), (c2, rx2, nx2) in zip(plain._patterns, cached._patterns, strict=True):
        assert c1 == c2 and rx1.pattern == rx2.pattern and rx1 is not rx2
        assert (nx1 and nx1.pattern) == (nx2 and nx2.pattern)
    texts = [item["text"] for item in load(ROOT / "tests" / "corpus")]
    assert len(texts) >= 400
    for text in texts:
        expected = plain.read(text)
        assert same(expected, cached.read(text)) and same(expected, cold.read(text)), text


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_pattern_file_is_not_used(monkeypatch: Any, tmp_path: Path,
                                            damage: str) -> None:
    fresh_reader(monkeypatch, tmp_path)
    path = next(tmp_path.glob("reader-patterns-*.json"))
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
    elif damage == "truncate":
        del raw[len(raw) // 3:]
    else:
        raw[:] = b"not a cache"
    path.write_bytes(bytes(raw))
    assert reading._load_cached(path) == {}
    compiled: list[str] = []
    real = reading._program

    def spy(rx: str) -> Any:
        compiled.append(rx)
        return real(rx)

    monkeypatch.setattr(reading, "_program", spy)
    reader = fresh_reader(monkeypatch, tmp_path)
    # nothing taken from the damaged file: every pattern compiled again, the file rewritten
    assert len(compiled) == len(reader._patterns) + sum(
        1 for _, _, nx in reader._patterns if nx is not None)
    assert reader.read("I cant breathe").current("red_flag")
    assert len(reading._load_cached(path)) > 100


def test_gunicorn_builds_the_app_once_before_forking() -> None:
    spec = importlib.util.spec_from_file_location("gconf", ROOT / "gunicorn.conf.py")
    assert spec and spec.loader
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert conf.preload_app is True


def test_the_text_dictionary_is_kept_per_rules_version(tmp_path: Path) -> None:
    from bot.rules_version import rules_version
    from bot.textcodec import build_dictionary, cached_dictionary

    flows = ROOT / "flows"
    built = build_dictionary(flows)
    assert cached_dictionary(flows, rules_version(flows), tmp_path) == built
    [path] = tmp_path.glob("text-dictionary-*.bin")
    assert cached_dictionary(flows, rules_version(flows), tmp_path) == built  # from the file
    path.write_bytes(path.read_bytes()[:-1] + b"?")  # damaged: built again, not used
    assert cached_dictionary(flows, rules_version(flows), tmp_path) == built
    assert cached_dictionary(flows, "other+00000000", tmp_path) == built  # its own file
    assert len(list(tmp_path.glob("text-dictionary-*.bin"))) == 2
