"""The docs cannot rot: the README stays short, every link resolves, the configuration reference is the one
generated from the config dataclasses, and every command the docs show names a recipe, script or make
target that exists and is accepted whole: its arguments by that recipe's own parser (flags, choices, types),
each `--set` by the config tree (its key and the type of its value), each shipped config it names is there.
The commands that need no real weights or GPUs also run: docs/real-model.md's, read from the page, in
tests/test_real_model_walkthrough.py; `make run` (tests/trainer/test_dpo_recipe.py), the tiny loop
(tests/stages/test_loop_end_to_end.py) and the report (tests/test_report.py)."""

import argparse
import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_script
from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import apply_override, build_dataclass, read_config_dict

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
                command = line.split("  #")[0].replace(" ...", "")
                # optional parts are shown in brackets ([--set ...]); a YAML list in a --set value stays
                command = re.sub(r"\[(--[^\[\]]*)\]", r"\1", command)
                found.append((page.name, shlex.split(command.replace("$SLURM_ARRAY_TASK_ID", "0"))))
    return found


class _Parser(BaseException):
    """Raised instead of parsing: carries the recipe's parser out of its main()."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


PARSE = argparse.ArgumentParser.parse_args


def _recipe_parser(script: Path, monkeypatch) -> argparse.ArgumentParser:
    def capture(self, *args, **kwargs):
        raise _Parser(self)

    spec = importlib.util.spec_from_file_location(f"recipe_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    try:
        module.main([])
    except _Parser as got:
        return got.parser
    raise AssertionError(f"{script} built no argument parser")


def _check_arguments(page: str, parser: argparse.ArgumentParser, args: list[str]) -> None:
    """The recipe's own parser accepts the documented arguments; each --set names a config key with a value
    of its type, and each shipped config named by --config is there and valid."""
    where = f"{page}: {parser.prog} {' '.join(args)}"
    try:
        parsed = PARSE(parser, args)
    except SystemExit:
        raise AssertionError(f"{where}: its parser refuses these arguments") from None
    for item in getattr(parsed, "overrides", None) or []:
        data: dict = {}
        apply_override(data, item)
        try:
            build_dataclass(Config, data, "")
        except ValueError as err:
            raise AssertionError(f"{where}: --set {item}: {err}") from None
    shipped = getattr(parsed, "config", None)
    if shipped and str(shipped).startswith("recipes/"):
        build_dataclass(Config, read_config_dict(REPO / shipped), str(shipped))


def test_every_documented_command_exists_and_is_accepted_whole(monkeypatch):
    commands = _commands()
    assert len(commands) > 30
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    parsers: dict[Path, argparse.ArgumentParser] = {}
    checked = 0
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
        if script not in parsers:
            with monkeypatch.context() as patch:
                parsers[script] = _recipe_parser(script, patch)
        _check_arguments(page, parsers[script], tokens[tokens.index(scripts[0]) + 1 :])
        checked += 1
    assert checked > 40


def test_the_checks_refuse_a_wrong_flag_value_key_or_type(monkeypatch):
    parser = _recipe_parser(REPO / "recipes" / "dpo.py", monkeypatch)
    for args, problem in (
        (["--no-such-flag"], "refuses"),
        (["--set", "train.max_stepz=3"], "train.max_stepz"),
        (["--set", "train.max_steps=many"], "expected int"),
    ):
        with pytest.raises(AssertionError, match=problem):
            _check_arguments("page.md", parser, args)
    score = _recipe_parser(REPO / "recipes" / "score.py", monkeypatch)
    with pytest.raises(AssertionError, match="refuses"):
        _check_arguments("page.md", score, ["--geometry", "nope"])


@pytest.mark.parametrize("script", sorted((REPO / "recipes").glob("*.py")), ids=lambda p: p.stem)
def test_recipe_help_keeps_its_line_breaks(script):
    """A backslash at a line's end in a (non-raw) docstring joins the lines in --help."""
    source = script.read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    literal = source.split('"""')[1]
    assert docstring == literal, f'{script.name}: its docstring is not printed as written (use r""")'
