"""The README's and the deployment docs' commands work as written: one style (`.venv/bin/...`
locally, `docker compose exec web flask ...` in Docker), every flask command exists, every
file, make target and module they name exists; the reviewer's example vignettes pass."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md", ROOT / "docs" / "clinical-review.md"]
BARE = ("flask", "python", "python3", "pytest", "pip", "gunicorn", "ruff")


def commands(path: Path) -> list[list[str]]:
    """Every command of every ```sh block, pipelines split, comments dropped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            out += [shlex.split(part) for part in line.split(" | ")]
    return out


ALL = [(p.name, c) for p in DOCS for c in commands(p)]


def test_there_are_commands_to_check() -> None:
    assert len(ALL) >= 20


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize(("doc", "argv"), ALL, ids=[f"{d}:{' '.join(a)}" for d, a in ALL])
def test_command_works_as_written(app: Any, doc: str, argv: list[str]) -> None:
    head = argv[0]
    assert head not in BARE, f"{doc}: `{' '.join(argv)}`: write .venv/bin/{head}"
    flask_cmds = set(app.cli.list_commands(app.app_context())) | {"run", "shell", "routes"}
    if head == "docker":
        assert argv[1] == "compose", argv
        if argv[2] == "exec":
            service, rest = argv[3], argv[4:]
            assert service in ("web", "worker", "redis"), argv
            if rest[0] == "flask":
                assert rest[1:3] == ["--app", "wsgi"] and rest[3] in flask_cmds, argv
        return
    if head == "make":
        targets = [a for a in argv[1:] if "=" not in a]
        assert set(targets) <= _make_targets(), argv
        return
    if head == ".venv/bin/flask":
        assert argv[1:3] == ["--app", "wsgi"], argv
        assert argv[3] in flask_cmds, f"{doc}: no flask command {argv[3]!r}"
        return
    if head == ".venv/bin/python":
        if argv[1] == "-m":
            module = argv[2]
            assert importlib.util.find_spec(module) is not None, module
            if module == "pytest":
                for path in argv[3:]:
                    assert path.startswith("-") or (ROOT / path).exists(), path
        elif argv[1] != "-c":
            assert (ROOT / argv[1]).is_file(), argv
        return
    assert head in ("cp", "chmod", "printf", "git", "openssl"), f"{doc}: unexpected {argv}"


def test_readme_example_vignettes_pass(app: Any, tmp_path: Path) -> None:
    text = (ROOT / "docs" / "clinical-review.md").read_text()
    example = tmp_path / "my-cases.yaml"
    example.write_text(re.findall(r"```yaml\n(.*?)```", text, re.S)[0])
    result = app.test_cli_runner().invoke(args=["vignettes", str(example)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
