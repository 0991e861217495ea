"""The package's layout rules (README, "Architecture"): folders that show the flow.

- the runners (cube recipes, the tile-by-tile pipeline, patch recipes, experiments, country
  inference) live in ``lames_cube/recipes/``; nothing below them and the command-line face
  imports the synthetic world;
- ``lames_cube/ml/`` holds only torch code and the baselines, and never imports a runner;
- the local STAC API lives in ``lames_cube/services/``, which only the command line (and the
  tests and ``lames_cube/testing``) import;
- no module imports ``demo``, ``cli`` or ``accessor`` except the face;
- no import circles; imports at the top of each module, a local import only with a comment
  saying why; no private name crosses a module boundary;
- one error tree: every exception class lives in ``lames_cube/errors.py``, each leaf also a
  builtin, no two classes with one name.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
from pathlib import Path

import pytest

import lames_cube

ROOT = Path(lames_cube.__file__).parent
#: Faces over the library: the package's lazy-name facade, the accessor (forwards only), the
#: demo and the CLI. The core imports none of them.
FACES = {"lames_cube", "lames_cube.accessor", "lames_cube.demo", "lames_cube.cli"}
RUNNERS = {"cubes", "pipeline", "patchsets", "experiments", "country"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(tree: ast.AST):
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` blocks (never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path) -> list[tuple[ast.stmt, list[str]]]:
    """Each import statement of a module with the absolute names it imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.append((node, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((node, [base] + [f"{base}.{a.name}" for a in node.names]))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the lames_cube modules it imports anywhere (top level or inside functions).

    ``from a.b import c`` counts ``a.b.c`` when that is a module, else ``a.b``; the packages above
    an imported module are not counted (``lames_cube/__init__`` is a facade of lazy names, and
    through it everything would reach everything). Imports under ``if TYPE_CHECKING:`` are not
    counted: they never run."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node, targets in _imports(name, path):
            if isinstance(node, ast.ImportFrom):
                subs = [t for t in targets[1:] if t in modules]
                targets = subs if len(subs) == len(targets) - 1 else [targets[0], *subs]
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


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other (directly or through others)."""
    found: list[set[str]] = []
    for name in graph:
        if name in reachable(graph, name) and not any(name in c for c in found):
            found.append({m for m in reachable(graph, name) if name in reachable(graph, m)})
    return found


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_runners_live_in_recipes():
    modules = _modules()
    assert {f"lames_cube.recipes.{r}" for r in RUNNERS} <= set(modules)
    for old in ("lames_cube.pipeline", "lames_cube.patch_recipes", "lames_cube.ml.experiments",
                "lames_cube.ml.country", "lames_cube.stac_server"):
        assert old not in modules, f"{old} is a runner or a service outside its folder"
    assert "lames_cube.services.stac_api" in modules and "lames_cube.services.host" in modules


def test_no_import_circles():
    found = circles(core_graph())
    assert found == [], f"modules that import each other: {[sorted(c) for c in found]}"
    graph = import_graph()
    assert "lames_cube.demo" not in reachable(graph, "lames_cube.demo")


def test_only_the_runners_and_the_face_use_the_synthetic_world():
    core = core_graph()
    allowed = ("lames_cube.synthetic", "lames_cube.recipes", "lames_cube.testing")
    users = {}
    for name in core:
        if any(_inside(name, a) for a in allowed):
            continue
        world = {m for m in reachable(core, name) if _inside(m, "lames_cube.synthetic")}
        if world:
            users[name] = sorted(world)
    assert users == {}, f"library modules that reach the synthetic world: {users}"
    # the runners do use it
    assert any(_inside(m, "lames_cube.synthetic") for m in core["lames_cube.recipes.patchsets"])


def test_ml_never_imports_a_runner():
    core = core_graph()
    ml = [name for name in core if _inside(name, "lames_cube.ml")]
    assert "lames_cube.ml.training" in ml
    for name in ml:
        runners = {m for m in reachable(core, name) if _inside(m, "lames_cube.recipes")}
        assert runners == set(), f"{name} reaches the runners {sorted(runners)}"


def test_only_the_command_line_and_the_tests_use_the_services():
    graph = import_graph()
    users = {name for name, deps in graph.items()
             if any(_inside(d, "lames_cube.services") for d in deps)
             and not any(_inside(name, p) for p in ("lames_cube.services", "lames_cube.testing"))}
    assert users == {"lames_cube.cli"}, f"modules importing lames_cube.services: {sorted(users)}"


def test_the_core_never_imports_its_faces():
    graph = import_graph()
    faces = {"lames_cube.demo", "lames_cube.cli", "lames_cube.accessor"}
    users = {name for name, deps in graph.items() if deps & faces} - FACES
    assert users == set(), f"library modules importing the demo or the CLI: {sorted(users)}"
    assert "lames_cube.demo" in graph["lames_cube.cli"]


def _local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each import inside a function body (``TYPE_CHECKING`` blocks aside)."""
    lines = path.read_text().splitlines()
    out = []
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in _walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    out.append((inner.lineno, lines[inner.lineno - 1]))
    return sorted(set(out))


def test_imports_are_at_the_top_or_say_why_not():
    """A function-local import only where an optional heavy dependency (torch, matplotlib) or
    the light ``import lames_cube`` / ``lames-cube --help`` forces it, with a comment saying
    which (``# local: ...``)."""
    silent = {}
    for name, path in _modules().items():
        bad = [f"{n}: {text.strip()}" for n, text in _local_imports(path) if "# local" not in text]
        if bad:
            silent[name] = bad
    assert silent == {}, f"local imports without a '# local: <why>' comment: {silent}"


def test_no_private_name_crosses_a_module():
    modules = _modules()
    crossing = []
    for name, path in modules.items():
        for node, targets in _imports(name, path):
            if not isinstance(node, ast.ImportFrom) or not targets[0].startswith("lames_cube"):
                continue
            for alias, target in zip(node.names, targets[1:], strict=True):
                if alias.name.startswith("_") and target not in modules \
                        and alias.name != "__version__":
                    crossing.append(f"{name}: from {targets[0]} import {alias.name}")
    assert crossing == [], f"private names imported from another module: {crossing}"


def _all_modules() -> list:
    return [importlib.import_module(m.name)
            for m in pkgutil.walk_packages(lames_cube.__path__, "lames_cube.")
            if not m.name.startswith("lames_cube.ml") or _has_torch()]


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def test_one_error_tree():
    from lames_cube import errors

    defined_elsewhere = sorted(
        f"{obj.__module__}.{obj.__qualname__}"
        for module in _all_modules() for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
        and obj.__module__.startswith("lames_cube") and obj.__module__ != "lames_cube.errors")
    assert defined_elsewhere == [], f"exception classes outside lames_cube/errors.py: " \
                                    f"{defined_elsewhere}"
    tree = [obj for obj in vars(errors).values()
            if isinstance(obj, type) and issubclass(obj, BaseException)
            and obj.__module__ == "lames_cube.errors"]
    assert len({c.__name__ for c in tree}) == len(tree)
    assert len(tree) >= 70
    builtin = {c for c in vars(builtins).values()
               if isinstance(c, type) and issubclass(c, BaseException)}
    for cls in tree:
        if any(other is not cls and issubclass(other, cls) for other in tree):
            continue  # not a leaf
        kinds = [b for b in cls.__mro__ if b in builtin and b not in (Exception, BaseException)]
        assert kinds, f"errors.{cls.__name__} is a leaf that subclasses no builtin " \
                      f"(ValueError, KeyError, ...): {[b.__name__ for b in cls.__mro__]}"
    assert issubclass(errors.StoreGridMismatchError, errors.GridMismatchError)


def test_the_graph_finds_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert "a" in reachable(graph, "a") and "d" not in reachable(graph, "d")
    assert circles(graph) == [{"a", "b", "c"}]


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    import os\n", ["os"]),
    ("def f():\n    import os  # local: heavy\n", []),
    ("import os\n", []),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os\n", []),
])
def test_the_local_import_check_sees_silent_local_imports(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [t.split()[-1] for _, t in _local_imports(path) if "# local" not in t] == expected
