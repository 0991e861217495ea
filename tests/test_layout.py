"""The package's layout: the library core never imports its faces (demo, CLI, report)."""

from __future__ import annotations

import ast
from pathlib import Path

import lames_cube

ROOT = Path(lames_cube.__file__).parent
#: Faces over the library: the package's lazy-name facade, the accessor (forwards only), the
#: demo and the CLI. The core imports none of them.
FACES = {"lames_cube", "lames_cube.accessor", "lames_cube.demo", "lames_cube.cli"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the lames_cube modules it imports anywhere (top level or inside functions).

    ``from a.b import c`` counts ``a.b`` and, when it is a module, ``a.b.c``; the packages above
    an imported module are not counted (``lames_cube/__init__`` is a facade of lazy names, and
    through it everything would reach everything)."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def core_graph() -> dict[str, set[str]]:
    """The import graph without the faces (what the library's modules import of each other)."""
    return {k: v - FACES for k, v in import_graph().items() if k not in FACES}


def test_no_import_circle_between_demo_pipeline_and_recipes():
    graph = import_graph()
    assert {"lames_cube.demo", "lames_cube.recipes.pipeline", "lames_cube.recipes.cubes"} <= set(graph)
    assert "lames_cube.demo" not in reachable(graph, "lames_cube.demo")
    core = core_graph()
    for name in ("lames_cube.recipes.pipeline", "lames_cube.recipes.cubes"):
        assert name not in reachable(core, name), f"{name} imports itself through a circle"
    assert "lames_cube.recipes.pipeline" not in reachable(core, "lames_cube.recipes.cubes")
    # the graph sees imports inside functions: recipes reaches the world presets that way
    assert "lames_cube.synthetic.presets" in reachable(core, "lames_cube.recipes.cubes")


def test_the_core_never_imports_its_faces():
    graph = import_graph()
    faces = {"lames_cube.demo", "lames_cube.cli", "lames_cube.accessor"}
    users = {name for name, deps in graph.items() if deps & faces} - FACES
    assert users == set(), f"library modules importing the demo or the CLI: {sorted(users)}"
    assert "lames_cube.demo" in graph["lames_cube.cli"]


def test_the_graph_finds_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert "a" in reachable(graph, "a") and "d" not in reachable(graph, "d")
