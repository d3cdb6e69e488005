"""The layering rules of DESIGN.md as a test: who may import whom (every import in every module of engine/
and kernels/, also those inside functions), no cycles between the engine's packages, and no code outside
engine/models naming a model family."""

import ast
from pathlib import Path

import pytest

from videogpa.engine.models import adapter_class, adapter_names

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"engine": "videogpa.engine", "kernels": "videogpa.kernels"}

# package -> the videogpa packages it may import (besides itself); None = no rule beyond the global ones
LOW = {"videogpa.kernels", "videogpa.engine.io", "videogpa.engine.types"}
FAMILIES_AND_DATA = {
    "videogpa.engine.geometry",
    "videogpa.engine.data",
    "videogpa.engine.models",
    "videogpa.engine.scenes",
}
ALLOWED = {
    "videogpa.kernels": set(),
    "videogpa.engine.io": set(),
    "videogpa.engine.types": set(),
    "videogpa.engine.geometry": {"videogpa.kernels", "videogpa.engine.io", "videogpa.engine.types"},
    "videogpa.engine.data": {"videogpa.engine.io", "videogpa.engine.types"},
    "videogpa.engine.scenes": {
        "videogpa.engine.io",
        "videogpa.engine.types",
        "videogpa.engine.geometry",
        "videogpa.engine.data",
    },
    "videogpa.engine.models": {"videogpa.engine.io", "videogpa.engine.types"},
    "videogpa.engine.core": LOW | FAMILIES_AND_DATA,
    "videogpa.engine.runtime": LOW | {"videogpa.engine.core", "videogpa.engine.models"},
    "videogpa.engine.stages": LOW | FAMILIES_AND_DATA | {"videogpa.engine.core", "videogpa.engine.runtime"},
    "videogpa.engine.train": LOW
    | FAMILIES_AND_DATA
    | {"videogpa.engine.core", "videogpa.engine.runtime", "videogpa.engine.stages"},
    "videogpa.engine.loop": LOW
    | FAMILIES_AND_DATA
    | {"videogpa.engine.core", "videogpa.engine.runtime", "videogpa.engine.stages", "videogpa.engine.train"},
}
# the trainer's own pieces, which nothing below the trainer may import
TRAINER = {
    "videogpa.engine.train.trainer",
    "videogpa.engine.train.dpo_step",
    "videogpa.engine.train.reference",
    "videogpa.engine.train.heldout",
    "videogpa.engine.train.training_data",
    "videogpa.engine.train.optim",
    "videogpa.engine.train.policy",
    "videogpa.engine.train.run_folder",
    "videogpa.engine.runtime.sequence_parallel",
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every module named by an import statement in the file (relative imports resolved)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


def owner(module: str) -> str:
    """The layer a module belongs to: its rule's package, or the module itself."""
    for package in sorted(ALLOWED, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return module


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


GRAPH = {
    name: {m for m in imports(path, name) if m.startswith("videogpa.") or m.split(".")[0] in FOLDERS}
    for name, path in modules().items()
}


def test_no_bare_engine_or_kernels_imports_and_nothing_imports_recipes():
    bad = {
        (n, m)
        for n, deps in GRAPH.items()
        for m in deps
        if m.split(".")[0] in ("engine", "kernels", "recipes")
    }
    assert not bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(package):
    bad = []
    for name, deps in GRAPH.items():
        if owner(name) != package:
            continue
        for dep in deps:
            layer = owner(dep)
            if within(dep, package) or any(within(dep, p) for p in ALLOWED[package]) or layer == "videogpa":
                continue
            if dep in ("videogpa", "videogpa.engine"):
                continue
            bad.append(f"{name} imports {dep}")
    assert not bad, "\n".join(bad)


def test_stages_and_lower_layers_never_import_the_trainer():
    bad = [
        f"{n} imports {d}"
        for n, deps in GRAPH.items()
        if not within(n, "videogpa.engine.train.trainer") and n not in TRAINER
        for d in deps
        if d in TRAINER
    ]
    assert not bad, "\n".join(bad)


def test_engine_root_holds_only_the_types_leaf():
    assert sorted(p.name for p in (REPO / "engine").glob("*.py")) == ["types.py"]


def file_edges() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (`from package import module` names the module, not the
    package's __init__), at module level or inside functions."""
    names = modules()
    edges: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                    ).strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            else:
                continue
            out |= {t for t in targets if t in names and t != name}
    return edges


def first_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a path that returns to its start, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_no_cycles_between_modules():
    cycle = first_cycle(file_edges())
    assert cycle is None, "module cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert first_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert first_cycle({"a": {"b"}, "b": set()}) is None


def test_no_cycles_between_engine_packages():
    def package_of(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:3])  # videogpa.engine.<package or module>

    edges: dict[str, set[str]] = {}
    for name, deps in GRAPH.items():
        if not name.startswith("videogpa.engine."):
            continue
        for dep in deps:
            if dep.startswith("videogpa.engine.") and package_of(dep) != package_of(name):
                edges.setdefault(package_of(name), set()).add(package_of(dep))
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("package cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def family_names() -> set[str]:
    names = set(adapter_names())
    for name in adapter_names():
        cls = adapter_class(name)
        names |= {n for n in (cls.pipelines.text_to_video, cls.pipelines.image_to_video) if n}
        names.add(cls.latent_convention.vae_class)
        transformer = getattr(cls, "transformer_class", None)
        if transformer is not None:
            names.add(transformer.__name__)
    return names


def test_nothing_outside_engine_models_names_a_model_family():
    """String constants (docstrings aside) equal to a family's name or one of its classes' names: a branch on
    the model. The config's default model name is the one allowed."""
    names = family_names()
    bad = []
    for path in [*sorted((REPO / "engine").rglob("*.py")), *sorted((REPO / "recipes").glob("*.py"))]:
        if (REPO / "engine" / "models") in path.parents:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                if path.name == "config.py" and node.value == "tiny":
                    continue  # ModelConfig's default model
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in names:
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.id}")
    assert not bad, "\n".join(bad)
