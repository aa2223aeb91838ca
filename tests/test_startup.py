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
    import gc

    try:
        spec.loader.exec_module(conf)
        assert not gc.isenabled()  # no collections while the master builds the app
    finally:
        conf.when_ready(None)  # what gunicorn calls once the app is built, before forking
    assert gc.isenabled()
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


# -- the engine snapshot (bot/conversation/snapshot.py)

def _engine_build(settings: dict[str, Any]) -> Any:
    from bot.conversation.engine import Engine

    return Engine(load_library(ROOT / "flows"), **settings)


def _snapshot(folder: Path, settings: dict[str, Any], secret: str = "s" * 32) -> Any:
    from bot.conversation import snapshot
    from bot.rules_version import full_digest

    return snapshot.cached(folder, full_digest(ROOT / "flows"), settings, secret,
                           lambda: _engine_build(settings))


def _no_ids(value: Any) -> Any:
    """The conversation's random ids left out (each engine makes its own)."""
    if isinstance(value, dict):
        return {k: _no_ids(v) for k, v in value.items()
                if k not in ("id", "episode_id", "conversation_id")}
    if isinstance(value, list):
        return [_no_ids(v) for v in value]
    return value


def _talk(engine: Any, texts: list[str]) -> list[Any]:
    session, out = None, []
    for text in texts:
        result = engine.handle(session, text, phone="+15550001111", profile={}, now=1.8e9)
        session = result.session
        out.append(_no_ids([result.reply, result.session, result.records]))
    return out


def test_an_engine_from_its_snapshot_reads_and_talks_exactly_as_a_built_one(
        monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(reading, "_compiled", {})
    settings = {"oncology_line": "+15550002222", "care_team": "+15550003333"}
    built, loaded = _snapshot(tmp_path, settings)
    assert not loaded and len(list(tmp_path.glob("engine-*.pickle"))) == 1
    again, loaded = _snapshot(tmp_path, settings)
    assert loaded and again is not built
    assert again.machine is not None and again.reader._correct("fevr") == "fever"
    for (_, rx1, _), (_, rx2, _) in zip(built.reader._patterns, again.reader._patterns,
                                        strict=True):
        assert rx1.pattern == rx2.pattern and rx1.flags == rx2.flags and rx1 is not rx2
    texts = [item["text"] for item in load(ROOT / "tests" / "corpus")]
    assert len(texts) >= 400
    for text in texts:
        assert same(built.read(text), again.read(text)), text
    for conversation in (["fever", "no", "38.6", "no", "no"], ["No I can't breathe"],
                         ["nose bleeding 40 mins wont stop"], ["hi", "menu", "2", "yes"]):
        assert _talk(built, conversation) == _talk(again, conversation), conversation


def test_a_snapshot_is_used_only_with_its_key_and_signature(tmp_path: Path) -> None:
    settings = {"oncology_line": "+15550002222"}
    _snapshot(tmp_path, settings)
    assert _snapshot(tmp_path, settings)[1]
    # another SECRET_KEY: the file does not verify, so the engine is built (and rewritten)
    assert not _snapshot(tmp_path, settings, secret="t" * 32)[1]
    assert _snapshot(tmp_path, settings, secret="t" * 32)[1]
    # other settings: another file, built; a damaged file: built again, never unpickled
    assert not _snapshot(tmp_path, {"oncology_line": "+15550009999"})[1]
    path = next(tmp_path.glob("engine-*.pickle"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    engine, loaded = _snapshot(tmp_path, {"oncology_line": "+15550009999"})
    assert not loaded and engine.oncology_line == "+15550009999"


def test_create_app_keeps_the_engine_in_the_instance_folder(tmp_path: Path) -> None:
    from bot import create_app
    from conftest import settings as app_settings

    first = create_app(app_settings("redis://127.0.0.1:1/0", tmp_path, ENGINE_SNAPSHOT_DIR=""))
    assert len(list(Path(first.instance_path).glob("engine-*.pickle"))) == 1
    assert first.extensions["engine_snapshot"] is False
    second = create_app(app_settings("redis://127.0.0.1:1/0", tmp_path, ENGINE_SNAPSHOT_DIR=""))
    assert second.extensions["rules_version"] == first.extensions["rules_version"]
    assert second.extensions["engine_snapshot"] is True
    assert second.extensions["triage"].engine is not first.extensions["triage"].engine
