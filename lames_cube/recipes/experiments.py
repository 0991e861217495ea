"""Experiment recipes: the LAMES experiments, one command each, each writing a run folder.

An experiment recipe is a YAML file (shipped ones in ``cubes/experiments/``,
``kind: experiment``)::

    kind: experiment
    name: site-detection
    patches: lames-world-site-patches   # a patch recipe: its sets are built first if missing
    task: site                          # site (binary) | sector (8 classes)
    bands: [B02, B03, B04, B08, B11, B12]   # default: every band of the site set
    model: small                        # a preset (small | lames) or a mapping of settings
    train: {epochs: 10, batch_size: 8, extra_per_epoch: 300, step_size: 300}
    variants:                           # one model per variant; extra: the patch recipe's rules
      none: {extra: []}
      blind: {extra: [blind]}
      checked: {extra: [checked]}
      checked-no-jitter: {extra: [checked], train: {jitter: false}}   # train: per-variant settings
    baselines: [pixel, index]           # per-pixel scikit-learn classifier; index threshold
    evaluate: {split: test, samples: 6}
    notes: ["..."]                      # lines for the report
    output: runs/site-detection

:func:`run_experiment` builds (or reuses) the patch sets, fits the baselines (the pixel
classifier on the training split, the index threshold on the validation split), trains one
model per variant (:func:`lames_cube.ml.train`), scores all of them on the test split
(:func:`lames_cube.ml.evaluate`) and writes the run folder: ``config.yaml`` (the recipe as
run, overrides included), ``<variant>/checkpoint.pt``, ``<variant>/metrics.json``,
``metrics.json`` (every model), ``report.md`` with its ``figures/``. A variant whose
checkpoint exists with the same settings (model, training, bands, the patch sets' content
and the lames_cube version) is not trained again; one trained with other settings is only
replaced with ``overwrite=True``. Variants not run this time keep their row in the run's
table when their folder is current.

Examples
--------
>>> r = load_experiment("site-detection")
>>> r.task, list(r.variants), r.baselines
('site', ['none', 'blind', 'checked', 'checked-no-jitter'], ('pixel', 'index'))
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lames_cube._atomic import atomic_write_text, check_writable
from lames_cube.errors import (
    ExperimentNotFoundError,
    ExperimentRecipeError,
    LamesCubeError,
    RunExistsError,
)
from lames_cube.recipes.cubes import CUBES_DIR

__all__ = ["ExperimentRecipe", "ExperimentRecipeError", "RunExistsError", "list_experiments",
           "load_experiment", "parse_experiment", "run_experiment"]

#: Where the shipped experiment recipes are.
EXPERIMENTS_DIR = CUBES_DIR / "experiments"
BASELINES = ("pixel", "index")
_KEYS = ("kind", "name", "description", "patches", "patches_output", "task", "bands", "model",
         "train", "variants", "baselines", "baseline", "evaluate", "notes", "output")
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "lr_range", "step_size",
               "class_weights", "seed", "augment", "jitter", "patience", "extra_per_epoch",
               "device", "threads", "num_workers", "weights")
_EVAL_KEYS = ("split", "samples", "batch_size")
_BASELINE_KEYS = ("n_pixels", "seed")



@dataclasses.dataclass(frozen=True)
class ExperimentRecipe:
    """A validated experiment recipe (keys: the module docstring)."""

    name: str
    patches: str
    task: str = "site"
    bands: tuple[str, ...] | None = None
    model: Any = "small"
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    variants: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: {"none": ()})
    #: Per-variant training settings on top of ``train`` (e.g. ``{jitter: false}``).
    variant_train: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    baselines: tuple[str, ...] = BASELINES
    baseline: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evaluate: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    output: str = "runs/experiment"
    patches_output: str | None = None
    description: str = ""
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as YAML-able values (``config.yaml`` of a run)."""
        out = {"kind": "experiment", "name": self.name, "description": self.description,
               "patches": self.patches, "patches_output": self.patches_output,
               "task": self.task, "bands": None if self.bands is None else list(self.bands),
               "model": self.model if isinstance(self.model, str) else dict(self.model),
               "train": dict(self.train),
               "variants": {k: {"extra": list(v), **({"train": dict(self.variant_train[k])}
                                                      if self.variant_train.get(k) else {})}
                            for k, v in self.variants.items()},
               "baselines": list(self.baselines), "baseline": dict(self.baseline),
               "evaluate": dict(self.evaluate), "notes": list(self.notes),
               "output": self.output}
        return json.loads(json.dumps(out))


def list_experiments() -> list[str]:
    """Names of the experiment recipes shipped in ``cubes/experiments/`` (sorted).

    Examples
    --------
    >>> "site-detection" in list_experiments()
    True
    """
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")) \
        if EXPERIMENTS_DIR.is_dir() else []


def _mapping(problems: list[str], data: Mapping[str, Any], key: str,
             keys: tuple[str, ...]) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        problems.append(f"{key}: must be a mapping with keys among {list(keys)}")
        return {}
    unknown = sorted(set(map(str, value)) - set(keys))
    if unknown:
        problems.append(f"{key}: unknown keys {unknown}; the keys are {list(keys)}")
    return {str(k): v for k, v in value.items() if k in keys}


def parse_experiment(data: Any, *, where: str = "the experiment recipe") -> ExperimentRecipe:
    """Validate an experiment recipe (a mapping, as read from YAML), reporting every mistake
    at once.

    Raises
    ------
    ExperimentRecipeError
        Unknown keys, wrong types or values; the message lists all of them.

    Examples
    --------
    >>> parse_experiment({"kind": "experiment", "name": "x", "patches": "demo-patches"}).variants
    {'none': ()}
    >>> parse_experiment({"kind": "experiment", "name": "x", "patches": 3, "task": "y"})
    Traceback (most recent call last):
    ...
    lames_cube.recipes.experiments.ExperimentRecipeError: the experiment recipe has 2 problem(s):
      - patches: 3 must be a non-empty string (a patch recipe name or path)
      - task: 'y' is not one of ['site', 'sector']
    """
    from lames_cube.ml.models import model_spec
    from lames_cube.ml.training import TASKS

    if not isinstance(data, Mapping):
        raise ExperimentRecipeError(f"{where} must be a YAML mapping; got "
                                    f"{type(data).__name__}.")
    problems: list[str] = []
    unknown = sorted(set(map(str, data)) - set(_KEYS))
    if unknown:
        problems.append(f"unknown keys {unknown}; the keys are {list(_KEYS)}")
    if data.get("kind") != "experiment":
        problems.append(f"kind: {data.get('kind')!r} must be 'experiment'")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"name: {name!r} must be a non-empty string")
    patches = data.get("patches")
    if not isinstance(patches, str) or not patches:
        problems.append(f"patches: {patches!r} must be a non-empty string (a patch recipe name "
                        f"or path)")
    task = data.get("task", "site")
    if task not in TASKS:
        problems.append(f"task: {task!r} is not one of {list(TASKS)}")
    bands = data.get("bands")
    if bands is not None and (not isinstance(bands, list) or not bands
                              or not all(isinstance(b, str) for b in bands)):
        problems.append(f"bands: {bands!r} must be a non-empty list of band names or null")
    model = data.get("model", "small")
    try:
        model_spec(model)
    except LamesCubeError as err:
        problems.append(f"model: {err}")
    train = _mapping(problems, data, "train", _TRAIN_KEYS)
    from lames_cube.ml.training import check_settings

    problems += [f"train.{msg}" for msg in check_settings(**train)]
    evaluate = _mapping(problems, data, "evaluate", _EVAL_KEYS)
    baseline = _mapping(problems, data, "baseline", _BASELINE_KEYS)
    variants_raw = data.get("variants", {"none": {"extra": []}})
    variants: dict[str, tuple[str, ...]] = {}
    variant_train: dict[str, dict[str, Any]] = {}
    if not isinstance(variants_raw, Mapping) or not variants_raw:
        problems.append("variants: must be a non-empty mapping name -> {extra: [rules]}")
    else:
        for key, value in variants_raw.items():
            extra = (value or {}).get("extra", []) if isinstance(value, Mapping) else None
            if (not isinstance(value, Mapping | type(None))
                    or set(value or {}) - {"extra", "train"}
                    or not isinstance(extra, list)
                    or not all(isinstance(e, str) for e in extra)):
                problems.append(f"variants.{key}: {value!r} must be a mapping {{extra: [rules], "
                                f"train: {{settings}}}}")
                continue
            variants[str(key)] = tuple(extra)
            section = f"variants.{key}.train"
            own = _mapping(problems, {section: (value or {}).get("train")}, section, _TRAIN_KEYS)
            problems += [f"{section}.{msg}" for msg in check_settings(**own)]
            if own:
                variant_train[str(key)] = own
    baselines = data.get("baselines", list(BASELINES))
    if not isinstance(baselines, list) or any(b not in BASELINES for b in baselines):
        problems.append(f"baselines: {baselines!r} must be a list of {list(BASELINES)}")
        baselines = []
    elif task == "sector" and "index" in baselines:
        problems.append("baselines: 'index' is a binary threshold; the sector task takes "
                        "['pixel']")
    notes = data.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        problems.append(f"notes: {notes!r} must be a list of strings")
        notes = []
    output = data.get("output", f"runs/{name}")
    if not isinstance(output, str) or not output:
        problems.append(f"output: {output!r} must be a folder path")
    patches_output = data.get("patches_output")
    if patches_output is not None and not isinstance(patches_output, str):
        problems.append(f"patches_output: {patches_output!r} must be a folder path or null")
    if problems:
        raise ExperimentRecipeError(f"{where} has {len(problems)} problem(s):\n  - "
                                    + "\n  - ".join(problems))
    return ExperimentRecipe(
        name=name, patches=patches, task=task, bands=None if bands is None else tuple(bands),
        model=model, train=train, variants=variants, variant_train=variant_train,
        baselines=tuple(baselines),
        baseline=baseline, evaluate=evaluate, notes=tuple(notes), output=output,
        patches_output=patches_output, description=str(data.get("description", "")))


def load_experiment(name_or_path: str | os.PathLike[str]) -> ExperimentRecipe:
    """Read an experiment recipe: a shipped name (``cubes/experiments/<name>.yaml``) or a path.

    Raises
    ------
    ExperimentNotFoundError
        No such recipe (the message lists the shipped ones).
    ExperimentRecipeError
        A recipe with mistakes (all listed).
    """
    text = os.fspath(name_or_path)
    bare = "/" not in text and os.sep not in text and not text.endswith((".yaml", ".yml"))
    path = EXPERIMENTS_DIR / f"{text}.yaml" if bare else Path(text).expanduser()
    if not path.is_file():
        raise ExperimentNotFoundError(f"no experiment recipe {text!r}; the shipped ones are "
                                      f"{list_experiments()}, or pass a path to a .yaml file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ExperimentRecipeError(f"{str(path)!r} is not valid YAML: {err}") from None
    recipe = parse_experiment(data, where=f"the experiment recipe {str(path)!r}")
    return dataclasses.replace(recipe, source=path)


def _patch_sets(recipe: ExperimentRecipe, data_dir: Any, progress: bool) -> dict[str, Path]:
    """The patch recipe's stores, built (or resumed) when its summary is missing."""
    from lames_cube.recipes.patchsets import build_patch_sets, load_patch_recipe

    patch_recipe = load_patch_recipe(recipe.patches)
    if patch_recipe.task != recipe.task:
        raise ExperimentRecipeError(f"the experiment's task is {recipe.task!r} but the patch "
                                    f"recipe {patch_recipe.name!r} makes {patch_recipe.task!r} "
                                    f"masks; name a {recipe.task} patch recipe.")
    out = Path(recipe.patches_output) if recipe.patches_output else patch_recipe.output_path
    from lames_cube.synthetic.clear import SKY

    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    if summary is not None and "world" in summary and summary["world"].get("sky") != SKY:
        if progress:  # rendered by an older version of the world's clear sky: redo them
            print(f"[{recipe.name}] the patch sets in {str(out)!r} were rendered otherwise "
                  f"({summary['world'].get('sky')!r}); rebuilding them", flush=True)
        summary = None
        overwrite_sets = True
    else:
        overwrite_sets = False
    if summary is None:
        summary = build_patch_sets(patch_recipe, data_dir=data_dir, output=out,
                                   overwrite=overwrite_sets, progress=progress)
    stores = {k: Path(v) for k, v in summary["stores"].items()}
    wanted = {rule for rules in recipe.variants.values() for rule in rules}
    missing = sorted(wanted - set(stores) - {"sites"})
    if missing:
        raise ExperimentRecipeError(
            f"variants use extra sets {missing} that the patch sets in {str(out)!r} do not have "
            f"(they have {sorted(stores)}); use rules of the patch recipe "
            f"{patch_recipe.name!r} ({list(patch_recipe.extra.rules)})."
        )
    return stores



def _fingerprint(store: Path) -> str:
    """A digest of a patch set's attributes (its grids, counts, statistics): a set rebuilt at
    the same path with other content has another fingerprint."""
    import hashlib

    from lames_cube.patchset import open_patch_set

    attrs = json.dumps(dict(open_patch_set(store).attrs), sort_keys=True, default=str)
    return hashlib.sha256(attrs.encode()).hexdigest()[:16]


def _previous(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's values, or None when there is none (a corrupt file counts as none)."""
    from lames_cube.errors import CheckpointError
    from lames_cube.ml.checkpoint import load_checkpoint

    if not checkpoint.exists():
        return None
    try:
        return load_checkpoint(checkpoint)
    except CheckpointError:
        return None


def run_experiment(recipe: ExperimentRecipe | str | os.PathLike[str], *,
                   output: str | os.PathLike[str] | None = None, data_dir: Any = None,
                   variants: list[str] | None = None, model: Any = None,
                   train_overrides: Mapping[str, Any] | None = None,
                   overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run an experiment recipe end to end and write its run folder.

    Parameters
    ----------
    recipe
        An :class:`ExperimentRecipe`, a shipped name or a path.
    output
        The run folder (default: the recipe's ``output``).
    data_dir
        The LAMES data directory (default: ``LAMES_DATA_DIR``).
    variants
        Run only these variants (default: all).
    model
        Another model (a preset name or mapping) than the recipe's.
    train_overrides
        Training settings that replace the recipe's (``epochs``, ``device``...).
    overwrite
        Retrain a variant whose folder holds a checkpoint trained with other settings
        (otherwise :class:`RunExistsError`); a checkpoint with the same settings is reused.
    progress
        Progress bars and a line per epoch.

    Returns
    -------
    dict
        The content of ``metrics.json``: per model the test scores, plus timings and paths.
    """
    from lames_cube.ml.checkpoint import load_checkpoint
    from lames_cube.ml.evaluation import evaluate
    from lames_cube.ml.run_report import write_experiment_report
    from lames_cube.ml.training import train

    recipe = recipe if isinstance(recipe, ExperimentRecipe) else load_experiment(recipe)
    if model is not None or train_overrides:
        recipe = dataclasses.replace(
            recipe, model=recipe.model if model is None else model,
            train={**recipe.train, **dict(train_overrides or {})})
        recipe = parse_experiment(recipe.to_dict(), where="the recipe with overrides")
    chosen = list(recipe.variants) if variants is None else list(variants)
    unknown = [v for v in chosen if v not in recipe.variants]
    if unknown or not chosen:
        raise ExperimentRecipeError(f"variants {unknown or chosen} are not in the recipe "
                                    f"{recipe.name!r}; it has {list(recipe.variants)}.")
    out = Path(output) if output is not None else Path(recipe.output).expanduser()
    check_writable(out, what="run folder")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    stores = _patch_sets(recipe, data_dir, progress)
    timings["patch sets"] = time.perf_counter() - start
    sites = stores["sites"]
    runs = {}
    for variant in chosen:  # refuse to overwrite another run before anything is fitted
        extra = [stores[rule] for rule in recipe.variants[variant]]
        settings = _run_settings(recipe, sites, extra, variant)
        checkpoint = out / variant / "checkpoint.pt"
        meta = _previous(checkpoint)
        reuse = meta is not None and meta.get("run_settings") == settings
        if meta is not None and not reuse and not overwrite:
            raise RunExistsError(
                f"{str(checkpoint)!r} was trained with other settings (model, training, "
                f"patch sets or version differ); pass overwrite=True (lames-cube train "
                f"--overwrite) to replace it, or another output folder (--output)."
            )
        runs[variant] = (extra, settings, checkpoint, meta if reuse else None)
    fitted = _fit_baselines(recipe, sites, timings, progress)
    evaluate_kw = {"split": "test", **dict(recipe.evaluate)}
    results: dict[str, Any] = {"recipe": recipe.name, "task": recipe.task, "variants": {},
                               "baselines": {}, "timings": timings, "reused": [],
                               "stores": {k: str(v) for k, v in stores.items()}}
    samples: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    for i, variant in enumerate(chosen):
        extra, settings, checkpoint, meta = runs[variant]
        if meta is None:
            if progress:
                print(f"[{recipe.name}] training variant {variant!r} "
                      f"({len(extra)} extra set(s))", flush=True)
            train(sites, checkpoint, extra=extra, task=recipe.task, bands=recipe.bands,
                  model=recipe.model, progress=progress, run_settings=settings,
                  **_variant_train(recipe, variant))
            meta = load_checkpoint(checkpoint)
        else:
            results["reused"].append(variant)
        timings[f"train {variant}"] = float(meta["train_seconds"])
        t0 = time.perf_counter()
        scored = evaluate(checkpoint, sites, name=f"U-Net {variant}",
                          baselines=fitted if i == 0 else None, output=out / variant,
                          progress=progress, **evaluate_kw)
        timings[f"evaluate {variant}"] = time.perf_counter() - t0
        samples.append(scored.pop("_samples"))
        curves[f"U-Net {variant}"] = meta["curve"]
        for label, entry in scored["models"].items():
            target = results["variants"] if label == f"U-Net {variant}" else results["baselines"]
            target[label] = entry
        for key in ("split", "classes", "n_samples"):
            results.setdefault(key, scored[key])
    _merge_other_variants(out, recipe, chosen, stores, results, curves)
    timings["total"] = time.perf_counter() - start
    results["files"] = write_experiment_report(out, recipe, results, samples=samples,
                                               curves=curves, fitted=fitted)
    atomic_write_text(out / "metrics.json", json.dumps(results, indent=2))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(
        {**recipe.to_dict(), "variants_run": chosen}, sort_keys=False))
    if progress:
        print(f"[{recipe.name}] run folder: {out} (report.md, metrics.json)", flush=True)
    return results


def _variant_train(recipe: ExperimentRecipe, variant: str) -> dict[str, Any]:
    """The training settings of one variant: the recipe's, then the variant's own."""
    return {**dict(recipe.train), **dict(recipe.variant_train.get(variant, {}))}


def _run_settings(recipe: ExperimentRecipe, sites: Path, extra: list[Path],
                  variant: str) -> dict[str, Any]:
    """What a variant's checkpoint depends on: a rerun with the same values reuses it."""
    from lames_cube import __version__
    from lames_cube.ml.jitter import parse_jitter
    from lames_cube.ml.models import model_spec

    train = _variant_train(recipe, variant)
    # the jitter actually applied (train's default included), so that a checkpoint trained
    # with other spreads, or with none, is never taken for this variant's
    jitter = parse_jitter(train.get("jitter", True))
    train["jitter"] = None if jitter is None else jitter.to_dict()
    settings = {"model": model_spec(recipe.model).to_dict(), "bands": recipe.bands,
                "task": recipe.task, "train": train,
                "patches": str(sites),
                "extra": [str(e) for e in extra], "version": __version__,
                "fingerprints": [_fingerprint(s) for s in (sites, *extra)]}
    return json.loads(json.dumps(settings))


def _merge_other_variants(out: Path, recipe: ExperimentRecipe, chosen: list[str],
                          stores: Mapping[str, Path], results: dict[str, Any],
                          curves: dict[str, Any]) -> None:
    """Variants of the recipe not run this time keep their place in the run's table when
    their folder holds a checkpoint with the current settings and its metrics."""
    for variant in recipe.variants:
        if variant in chosen:
            continue
        extra = [stores[rule] for rule in recipe.variants[variant]]
        meta = _previous(out / variant / "checkpoint.pt")
        metrics = out / variant / "metrics.json"
        if meta is None or meta.get("run_settings") != _run_settings(recipe, stores["sites"],
                                                                     extra, variant) \
                or not metrics.is_file():
            continue
        entry = json.loads(metrics.read_text())["models"].get(f"U-Net {variant}")
        if entry is not None:
            results["variants"][f"U-Net {variant}"] = entry
            results["reused"].append(variant)
            results["timings"][f"train {variant}"] = float(meta["train_seconds"])
            curves[f"U-Net {variant}"] = meta["curve"]


def _fit_baselines(recipe: ExperimentRecipe, sites: Path, timings: dict[str, float],
                   progress: bool) -> dict[str, Any]:
    from lames_cube.baselines import fit_index_threshold, fit_pixel_classifier

    fitted: dict[str, Any] = {}
    kw = dict(recipe.baseline)
    for name in recipe.baselines:
        t0 = time.perf_counter()
        if name == "pixel":
            model = fit_pixel_classifier(sites, bands=list(recipe.bands) if recipe.bands
                                         else None, split="train", **kw)
        else:
            model = fit_index_threshold(sites, bands=list(recipe.bands) if recipe.bands
                                        else None, split="validation")
        fitted[model.name] = model
        timings[f"baseline {name}"] = time.perf_counter() - t0
        if progress:
            print(f"[{recipe.name}] baseline {model.name} fitted in "
                  f"{timings[f'baseline {name}']:.1f} s", flush=True)
    return fitted
