"""Run every asv benchmark once, so that a broken benchmark fails the tests."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LAMES_BENCH_QUICK", "1")  # small inputs: run each benchmark once, fast
import benchmarks  # noqa: E402


def _cases():
    for info in pkgutil.iter_modules(benchmarks.__path__):
        module = importlib.import_module(f"benchmarks.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for name in dir(cls):
                if name.startswith(("time_", "track_", "peakmem_", "mem_")):
                    yield pytest.param(cls, name, id=f"{info.name}.{cls.__name__}.{name}")


_CACHE: dict[type, object] = {}


@pytest.mark.slow  # the benchmark smoke runs: about 1 min together
@pytest.mark.parametrize("cls, name", list(_cases()))
def test_benchmark_runs_once(cls, name, lames_dir):
    bench = cls()
    args = ()
    if hasattr(bench, "setup_cache"):  # asv passes setup_cache's result to setup and benchmarks
        if cls not in _CACHE:
            _CACHE[cls] = bench.setup_cache()
        args = (_CACHE[cls],)
    if getattr(cls, "params", None):  # a parametrised benchmark: its first parameter value
        args = (*args, cls.params[0])
    if hasattr(bench, "setup"):
        bench.setup(*args)
    try:
        result = getattr(bench, name)(*args)
        if name.startswith("track_"):
            assert result > 0
    finally:
        if hasattr(bench, "teardown"):
            bench.teardown(*args)
