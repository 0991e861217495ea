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

import hashlib
import json
import os
import time
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import typing_extensions
import yaml
from pydantic import AfterValidator, ConfigDict, Field, Strict, ValidationInfo, field_validator

from lames_cube import __version__
from lames_cube._atomic import atomic_write_text, check_writable
from lames_cube.errors import (
    CheckpointError,
    ExperimentNotFoundError,
    ExperimentRecipeError,
    LamesCubeError,
    RunExistsError,
)
from lames_cube.patchset import open_patch_set
from lames_cube.recipes.cubes import CUBES_DIR
from lames_cube.recipes.patchsets import build_patch_sets, load_patch_recipe
from lames_cube.recipes.schema import (
    Doc,
    MinLen,
    Mistake,
    Section,
    Text,
    Written,
    keys,
    read_yaml,
    settings,
    validate,
)
from lames_cube.synthetic.clear import SKY

__all__ = ["ExperimentRecipe", "ExperimentRecipeError", "RunExistsError", "list_experiments",
           "load_experiment", "parse_experiment", "run_experiment"]

#: Where the shipped experiment recipes are.
EXPERIMENTS_DIR = CUBES_DIR / "experiments"
Baseline = Literal["pixel", "index"]
BASELINES = typing.get_args(Baseline)
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "lr_range", "step_size",
               "class_weights", "seed", "augment", "jitter", "patience", "extra_per_epoch",
               "device", "threads", "num_workers", "weights")



def _check_train(settings: dict[str, Any]) -> dict[str, Any]:
    """Training settings as :func:`lames_cube.ml.train` checks them (before anything runs)."""
    from lames_cube.ml.training import check_settings  # local: ml needs optional torch

    problems = check_settings(**settings)
    if problems:
        raise Mistake(lines=[f".{p}" for p in problems])
    return settings


#: ``train`` (and a variant's ``train``): keyword arguments of :func:`lames_cube.ml.train`.
TrainSettings = Annotated[keys("train", _TRAIN_KEYS), AfterValidator(_check_train),
                          Doc("{epochs: 10, batch_size: 8}")]


@pydantic.with_config(ConfigDict(extra="forbid"))
class _Variant(typing_extensions.TypedDict, total=False):
    """One variant: its extra sets (by rule) and its own training settings."""

    extra: Annotated[tuple[Text, ...], Doc("[blind]", allowed="rules of the patch recipe")]
    train: TrainSettings


def _variant_written(value: Any) -> Any:
    return {"extra": value} if isinstance(value, tuple) else {} if value is None else value


@settings
class ExperimentRecipe(Section):
    """A validated experiment recipe (keys: the module docstring). ``variants`` maps each
    variant to its extra sets' rules, ``variant_train`` to its own training settings;
    ``source`` is the file it came from and takes no part in comparisons."""

    _INTERNAL: ClassVar[tuple[str, ...]] = ("source", "variant_train")

    kind: Annotated[Literal["experiment"], Doc("experiment")]
    name: Annotated[Text, Doc("site-detection")]
    patches: Annotated[Text, Doc("lames-world-site-patches", allowed="a patch recipe name or path")]
    task: Literal["site", "sector"] = "site"
    bands: Annotated[tuple[Text, ...], MinLen(1), Doc("[B02, B03, B04]")] | None = None
    model: Any = "small"
    train: TrainSettings = field(default_factory=dict)
    variants: Annotated[dict[str, Annotated[tuple[str, ...], Written(
        _Variant, lambda v: tuple(v.get("extra", ())), _variant_written)]], MinLen(1),
        Doc("{none: {extra: []}, checked: {extra: [checked]}}")] = field(
        default_factory=lambda: {"none": ()})
    #: Per-variant training settings on top of ``train`` (e.g. ``{jitter: false}``).
    variant_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: tuple[Baseline, ...] = BASELINES
    baseline: Annotated[keys("baseline", ("n_pixels", "seed")), Doc("{n_pixels: 20000}")] = field(
        default_factory=dict)
    evaluate: Annotated[keys("evaluate", ("split", "samples", "batch_size")), Doc(
        "{split: test, samples: 6}")] = field(default_factory=dict)
    notes: Annotated[tuple[Annotated[str, Strict()], ...], Doc("['a line for the report']")] = ()
    output: Annotated[Text, Doc("runs/site-detection")] = Field(None, validate_default=True)
    patches_output: Annotated[Text, Doc("patch-sets/site-detection")] | None = None
    description: Annotated[str, Strict()] = ""
    source: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _shape(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A variant's ``train`` (``variants: {v: {extra: [...], train: {...}}}``) is kept in
        ``variant_train``."""
        variants = data.get("variants")
        if isinstance(variants, Mapping):
            data["variant_train"] = {str(k): dict(v["train"]) for k, v in variants.items()
                                     if isinstance(v, Mapping) and isinstance(v.get("train"),
                                                                              Mapping)}
        return data

    @field_validator("model")
    @classmethod
    def _model(cls, model: Any) -> Any:
        from lames_cube.ml.models import model_spec  # local: ml needs optional torch

        try:
            model_spec(model)
        except LamesCubeError as err:
            raise Mistake(lines=[f": {err}"]) from None
        return model

    @field_validator("baselines")
    @classmethod
    def _binary(cls, baselines: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("task") == "sector" and "index" in baselines:
            raise Mistake("lists 'index', but 'index' is a binary threshold", "[pixel] for the "
                          "sector task", "remove 'index'")
        return baselines

    @field_validator("output", mode="before")
    @classmethod
    def _output(cls, output: Any, info: ValidationInfo) -> Any:
        return f"runs/{info.data.get('name', 'experiment')}" if output is None else output

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


def parse_experiment(data: Any, *, where: str = "the experiment recipe",
                     source: Path | None = None) -> ExperimentRecipe:
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
    >>> try:
    ...     parse_experiment({"kind": "experiment", "name": "x", "patches": 3, "task": "sitte"})
    ... except ExperimentRecipeError as err:
    ...     print(err)
    the experiment recipe has 2 problem(s):
      - patches=3 is a int, not a non-empty string. Allowed: a patch recipe name or path. Fix: write e.g. patches: lames-world-site-patches.
      - task='sitte' is not a known choice. Allowed: site | sector. Fix: did you mean 'site'?
    """
    return validate(ExperimentRecipe, data, error=ExperimentRecipeError, where=where,
                    context={"source": source})


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
    return parse_experiment(read_yaml(path, ExperimentRecipeError), source=path,
                            where=f"the experiment recipe {str(path)!r}")


def _patch_sets(recipe: ExperimentRecipe, data_dir: Any, progress: bool) -> dict[str, Path]:
    """The patch recipe's stores, built (or resumed) when its summary is missing."""

    patch_recipe = load_patch_recipe(recipe.patches)
    if patch_recipe.task != recipe.task:
        raise ExperimentRecipeError(f"the experiment's task is {recipe.task!r} but the patch "
                                    f"recipe {patch_recipe.name!r} makes {patch_recipe.task!r} "
                                    f"masks; name a {recipe.task} patch recipe.")
    out = Path(recipe.patches_output) if recipe.patches_output else patch_recipe.output_path

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


    attrs = json.dumps(dict(open_patch_set(store).attrs), sort_keys=True, default=str)
    return hashlib.sha256(attrs.encode()).hexdigest()[:16]


def _previous(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's values, or None when there is none (a corrupt file counts as none)."""
    from lames_cube.ml.checkpoint import load_checkpoint  # local: ml needs optional torch

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
    from lames_cube.ml.checkpoint import load_checkpoint  # local: ml needs optional torch
    from lames_cube.ml.evaluation import evaluate  # local: ml needs optional torch
    from lames_cube.ml.run_report import write_experiment_report  # local: ml needs optional torch
    from lames_cube.ml.training import train  # local: ml needs optional torch

    recipe = recipe if isinstance(recipe, ExperimentRecipe) else load_experiment(recipe)
    if model is not None or train_overrides:
        recipe = parse_experiment(
            {**recipe.to_dict(), "model": recipe.model if model is None else model,
             "train": {**recipe.train, **dict(train_overrides or {})}},
            where="the recipe with overrides", source=recipe.source)
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
    from lames_cube.ml.jitter import parse_jitter  # local: ml needs optional torch
    from lames_cube.ml.models import model_spec  # local: ml needs optional torch

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
    from lames_cube.ml.baselines import (  # local: ml needs optional torch
        fit_index_threshold,
        fit_pixel_classifier,
    )

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
