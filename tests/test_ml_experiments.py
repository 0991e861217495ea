"""Experiment recipes: every mistake reported at once, a run folder with checkpoints, metrics,
a report and its figures, reused on a rerun; the command line."""

from __future__ import annotations

import json

import pytest
import yaml

from lames_cube.cli import main
from lames_cube.ml.checkpoint import load_checkpoint
from lames_cube.recipes.experiments import (
    ExperimentRecipeError,
    RunExistsError,
    list_experiments,
    load_experiment,
    parse_experiment,
    run_experiment,
)
from lames_cube.testing.ml_sets import planted_patch_set

TINY_TRAIN = {"epochs": 2, "batch_size": 4, "threads": 1, "step_size": 3, "extra_per_epoch": 3}


@pytest.fixture(scope="module")
def patch_sets(tmp_path_factory):
    """A planted site set and a no-mine extra set, with the summary build_patch_sets writes."""
    root = tmp_path_factory.mktemp("sets")
    sites, _, _ = planted_patch_set(root / "sites.zarr", size=32)
    checked, _, _ = planted_patch_set(root / "checked.zarr", size=32, rows=2, cols=3,
                                      mines=False, splits=["train"] * 6, seed=4)
    (root / "summary.json").write_text(json.dumps(
        {"stores": {"sites": str(sites), "checked": str(checked)}}))
    return root


def recipe(patch_sets, tmp_path, **changes):
    data = {"kind": "experiment", "name": "tiny", "patches": "demo-patches",
            "patches_output": str(patch_sets), "task": "site", "model": "small",
            "train": TINY_TRAIN, "variants": {"none": {"extra": []},
                                              "checked": {"extra": ["checked"]}},
            "baselines": ["pixel", "index"], "baseline": {"n_pixels": 2000},
            "evaluate": {"samples": 3}, "output": str(tmp_path / "run"),
            "notes": ["a tiny planted world"]}
    data.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_recipes_parse():
    assert {"site-detection", "sector-classification"} <= set(list_experiments())
    site = load_experiment("site-detection")
    assert list(site.variants) == ["none", "blind", "checked", "checked-no-jitter"]
    assert site.variants["blind"] == ("blind",) and site.baselines == ("pixel", "index")
    assert site.variant_train == {"checked-no-jitter": {"jitter": False}}
    assert site.to_dict()["variants"]["checked-no-jitter"] == {
        "extra": ["checked"], "train": {"jitter": False}}
    assert load_experiment("sector-classification").task == "sector"


def test_every_mistake_is_reported_at_once():
    with pytest.raises(ExperimentRecipeError, match="5 problem") as err:
        parse_experiment({"kind": "experiment", "name": "x", "patches": "p", "colour": 1,
                          "task": "sector", "baselines": ["index"], "model": "huge",
                          "train": {"epoch": 3}, "variants": {"a": {"extra": "blind"}}})
    text = str(err.value)
    for part in ("colour=1 is an unknown key", "'index' is a binary threshold", "not a preset",
                 "train.epoch=3 is an unknown key", "did you mean 'train.epochs'?", "variants.a"):
        assert part in text, part
    with pytest.raises(ExperimentRecipeError, match=r"train.epochs='10' must be an integer"):
        parse_experiment({"kind": "experiment", "name": "x", "patches": "p",
                          "train": {"epochs": "10", "threads": 2}})
    with pytest.raises(ExperimentRecipeError, match="no experiment recipe 'nope'"):
        load_experiment("nope")


@pytest.mark.slow  # trains every variant
def test_a_run_writes_its_folder_and_a_rerun_reuses_it(patch_sets, tmp_path, capsys):
    path = recipe(patch_sets, tmp_path)
    results = run_experiment(path, progress=False)
    run = tmp_path / "run"
    assert set(results["variants"]) == {"U-Net none", "U-Net checked"}
    assert len(results["baselines"]) == 2
    for name in ("config.yaml", "metrics.json", "report.md", "none/checkpoint.pt",
                 "checked/checkpoint.pt", "none/metrics.json", "none/report.md",
                 "figures/curves.png", "figures/samples.png", "figures/class-f1.png"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["variants"]["U-Net none"]["scores"]["macro_f1"] == pytest.approx(
        results["variants"]["U-Net none"]["scores"]["macro_f1"])
    report = (run / "report.md").read_text()
    assert "LAMES (paper)" in report and "U-Net checked" in report
    assert "a tiny planted world" in report and "![" in report
    ck = load_checkpoint(run / "checked" / "checkpoint.pt")
    assert ck["settings"]["extra"] == [str(patch_sets / "checked.zarr")]
    stamp = (run / "none" / "checkpoint.pt").stat().st_mtime_ns
    again = run_experiment(path, progress=False, variants=["none"])
    assert (run / "none" / "checkpoint.pt").stat().st_mtime_ns == stamp  # reused, not retrained
    assert again["variants"] == results["variants"]  # checked not run, still in the table
    assert sorted(again["reused"]) == ["checked", "none"]
    assert "U-Net checked" in (run / "report.md").read_text()
    # jitter is on by default: saying so reuses the checkpoint, turning it off is another run
    explicit = recipe(patch_sets, tmp_path, train={**TINY_TRAIN, "jitter": True})
    reran = run_experiment(explicit, progress=False, variants=["none"])
    assert sorted(reran["reused"]) == ["checked", "none"]
    assert (run / "none" / "checkpoint.pt").stat().st_mtime_ns == stamp
    bare = recipe(patch_sets, tmp_path, train={**TINY_TRAIN, "jitter": False})
    with pytest.raises(RunExistsError, match="trained with other settings"):
        run_experiment(bare, progress=False, variants=["none"])
    # other settings: refused unless overwrite
    other = recipe(patch_sets, tmp_path, train={**TINY_TRAIN, "epochs": 1})
    with pytest.raises(RunExistsError, match=r"trained with other settings.*--overwrite"):
        run_experiment(other, progress=False, variants=["none"])
    assert (run / "none" / "checkpoint.pt").stat().st_mtime_ns == stamp
    third = run_experiment(other, progress=False, variants=["none"], overwrite=True)
    assert load_checkpoint(run / "none" / "checkpoint.pt")["settings"]["epochs"] == 1
    assert "U-Net checked" not in third["variants"]  # its settings are no longer current


def test_a_variant_naming_a_set_the_patches_lack(patch_sets, tmp_path):
    path = recipe(patch_sets, tmp_path, variants={"b": {"extra": ["blind"]}})
    with pytest.raises(ExperimentRecipeError, match=r"extra sets \['blind'\]"):
        run_experiment(path, progress=False)
    with pytest.raises(ExperimentRecipeError, match=r"variants \['zzz'\] are not in"):
        run_experiment(recipe(patch_sets, tmp_path), variants=["zzz"], progress=False)


def test_cli_train_lists_and_reports_errors(patch_sets, tmp_path, capsys):
    assert main(["train", "--list"]) == 0
    assert "site-detection" in capsys.readouterr().out
    assert main(["train", str(recipe(patch_sets, tmp_path, task="sectors"))]) == 2
    assert "task='sectors' is not a known choice" in capsys.readouterr().err
