"""Every import points downward: core (errors .. methods) below the facade, families and evaluation above
it, the command line and the server on top; and no two modules import each other, even lazily.

Read from the source (``ast``), lazy imports inside functions included, ``if TYPE_CHECKING:`` blocks not.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import attngrad

ROOT = Path(attngrad.__file__).parent

#: Layer of each top-level module / subpackage of ``attngrad``: a module may import only its own layer or lower.
LAYERS = {
    **dict.fromkeys(["errors", "io", "targets", "losses", "results"], 0),
    "models": 1,
    "methods": 2,
    **dict.fromkeys(["explainer", "stitch", "viz", "gallery", "cases"], 3),
    **dict.fromkeys(["text", "lm", "clip", "seq2seq", "vlm", "experiments", "evaluation", "compare", "demo",
                     "clip_demo", "vlm_demo"], 4),
    **dict.fromkeys(["cli", "server"], 5),
    **dict.fromkeys(["__main__", ""], 6),  # "": the package's own __init__ (the public re-exports)
}


def _name(path: Path) -> str:
    parts = ["attngrad", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


@cache  # one parse of the source for every test here
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in LAYERS, f"{module}: add its top-level name to LAYERS"
    return LAYERS[top]


def test_every_import_points_downward():
    upward = [f"{a} -> {b}" for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
    assert not upward, "imports that point upward:\n" + "\n".join(sorted(upward))


def test_no_two_modules_import_each_other():
    graph = _graph()
    cycles = []
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    # a package's __init__ may import its own modules when they import it back: the command line's
    # registry (``attngrad.cli`` imports every command module, each registers on ``cli.main``)
    for start in sorted(set(graph) - packages):  # a path back to ``start`` not through its own package
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt == start:
                    cycles.append(start)
                elif nxt not in seen and not start.startswith(nxt + "."):
                    seen.add(nxt)
                    stack.append(nxt)
    assert not cycles, f"modules in an import cycle: {sorted(set(cycles))}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself can fail: a core module importing the command line is caught."""
    fake = tmp_path / "attngrad" / "methods" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..cli import main\n")
    deps = _imports("attngrad.methods.x", fake, {"attngrad.cli", "attngrad.methods.x"})
    assert deps == {"attngrad.cli"} and _layer("attngrad.cli") > _layer("attngrad.methods.x")


def test_every_family_result_stands_on_the_one_base_below_it():
    """``attngrad.results`` (the base every family's result inherits, issue 21) imports no other attngrad
    module, and every family's result module takes it from there: downward, never sideways or upward."""
    graph = _graph()
    assert graph["attngrad.results"] == set()
    families = ["attngrad.stitch", "attngrad.text.results", "attngrad.lm.explainer", "attngrad.vlm.explainer",
                "attngrad.clip.explainer", "attngrad.seq2seq.explainer", "attngrad.seq2seq.coattention"]
    assert all("attngrad.results" in graph[m] and _layer(m) > _layer("attngrad.results") for m in families)
