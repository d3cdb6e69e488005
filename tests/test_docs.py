"""The docs cannot rot: the README stays short, every link resolves, the configuration reference is the one
generated from the config dataclasses, and every command the docs show names a recipe, script or make
target that exists, with flags that recipe's parser accepts."""

import argparse
import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target} (no {file})"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
            assert anchor in {_anchor(h) for h in headings}, (
                f"{page.name}: no heading for #{anchor} in {file.name}"
            )


def test_the_configuration_reference_is_generated_from_the_code():
    reference = load_script("scripts/config_reference.py")
    assert reference.render() == (REPO / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md is out of date: run python scripts/config_reference.py"
    )


def test_the_run_cost_table_is_the_scripts_output():
    table = load_script("scripts/run_cost.py").table()
    assert table in (REPO / "docs" / "performance.md").read_text()


def _commands() -> list[tuple[str, list[str]]]:
    """(page, tokens) of every shell command in the docs' code blocks, continuation lines joined."""
    found = []
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text())
        for line in text.splitlines():
            line = line.strip()
            if re.match(r"(python3? |deepspeed |torchrun |make |CI=true )", line):
                tokens = shlex.split(line.split("  #")[0].replace("[", "").replace("]", ""))
                found.append((page.name, tokens))
    return found


class _Parser(BaseException):
    """Raised instead of parsing: carries the recipe's parser out of its main()."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _recipe_flags(script: Path, monkeypatch) -> set[str]:
    def capture(self, *args, **kwargs):
        raise _Parser(self)

    spec = importlib.util.spec_from_file_location(f"recipe_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    try:
        module.main([])
    except _Parser as got:
        return set(got.parser._option_string_actions)
    raise AssertionError(f"{script} built no argument parser")


def test_every_documented_command_exists_with_the_flags_it_shows(monkeypatch):
    commands = _commands()
    assert len(commands) > 30
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    flags: dict[Path, set[str]] = {}
    for page, tokens in commands:
        if tokens[0] == "make":
            assert tokens[1] in targets, f"{page}: make {tokens[1]} is no Makefile target"
            continue
        scripts = [t for t in tokens if t.endswith(".py")]
        if not scripts:
            continue
        script = REPO / scripts[0]
        assert script.is_file(), f"{page}: {scripts[0]} does not exist"
        if script.parent.name != "recipes":
            continue
        if script not in flags:
            with monkeypatch.context() as patch:
                flags[script] = _recipe_flags(script, patch)
        used = {t.split("=")[0] for t in tokens[tokens.index(scripts[0]) + 1 :] if t.startswith("--")}
        assert used <= flags[script], f"{page}: {script.name} has no flag {sorted(used - flags[script])}"


@pytest.mark.parametrize("script", sorted((REPO / "recipes").glob("*.py")), ids=lambda p: p.stem)
def test_recipe_help_keeps_its_line_breaks(script):
    """A backslash at a line's end in a (non-raw) docstring joins the lines in --help."""
    source = script.read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    literal = source.split('"""')[1]
    assert docstring == literal, f'{script.name}: its docstring is not printed as written (use r""")'
