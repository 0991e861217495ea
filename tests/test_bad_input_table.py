"""The README's bad-input table names real tests, each asserting its error and message."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| (?P<what>[^|]+) \| `[^`]+` \| (?P<error>\w+)[^|]* \| "
                 r"(?P<test>tests/[\w/]+\.py::\w+) \| `(?P<match>[^`]+)` \|$")


def table_rows() -> list[dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bad input: what is refused, and the test that shows it")[1]
    section = section.split("\n## ")[0]
    return [m.groupdict() for line in section.splitlines() if (m := ROW.match(line))]


def _raises(func: ast.FunctionDef) -> list[tuple[str, str]]:
    """(exception name, match source text) of every ``pytest.raises`` in a test."""
    out = []
    for node in ast.walk(func):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "raises" and node.args):
            exc = ast.unparse(node.args[0])
            value = next((k.value for k in node.keywords if k.arg == "match"), None)
            # the pattern as Python reads it (r"\(" and "\\(" alike); f-strings as written
            match = (value.value if isinstance(value, ast.Constant)
                     else ast.unparse(value) if value is not None else "")
            out.append((exc, match))
    return out


def test_the_table_has_at_least_30_kinds_each_a_real_test_asserting_its_message():
    rows = table_rows()
    assert len(rows) >= 30, f"only {len(rows)} rows parsed"
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bad input: what is refused, and the test that shows it")[1]
    lines = [line for line in section.split("\n## ")[0].splitlines() if line.startswith("| ")]
    assert len(lines) - 1 == len(rows), (  # the header; the |---| rule does not start "| "
        "rows the check cannot read: "
        f"{[line for line in lines[1:] if not ROW.match(line)][:3]}")
    trees: dict[str, ast.Module] = {}
    for row in rows:
        path, name = row["test"].split("::")
        tree = trees.setdefault(path, ast.parse((ROOT / path).read_text()))
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
        assert funcs, f"{row['test']} does not exist"
        raises = _raises(funcs[0])
        hits = [m for exc, m in raises if exc.split(".")[-1] == row["error"] or
                row["error"] in exc]
        assert hits, f"{row['test']} has no pytest.raises({row['error']}, ...)"
        if any(m.isidentifier() for m in hits):  # match=<parameter>: the patterns are in
            hits += [n.value for d in funcs[0].decorator_list for n in ast.walk(d)  # @parametrize
                     if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert any(row["match"] in m for m in hits), \
            f"{row['test']}: no match= with {row['match']!r} (has {hits})"
