# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training and evaluation, with the paper's table beside ours
#
# LAMES experiment (a), mine-site detection, as an experiment recipe: patch sets of the LAMES
# site boxes rendered by the synthetic world, a small U-Net, scored on the test sites beside
# a per-pixel classifier, a spectral-index threshold and the published LAMES numbers.
#
# `LAMES_NB_SIZE=small` (default): the demo world's four sites, one epoch (a minute; the
# scores mean little). `full`: every LAMES site, the demo's 4 epochs (`lames-cube demo`
# runs the same experiment); `lames-cube train site-detection` is the full-size experiment.
# Beside the figure the notebook saves the numbers drawn in it (`figures/02_macro_f1.json`);
# `tests/test_notebooks.py` recomputes them with the library and compares.

# %%
import dataclasses
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

from lames_cube.recipes.experiments import load_experiment, run_experiment
from lames_cube.report import results_table

SIZE = os.environ.get("LAMES_NB_SIZE", "small")
OUT = Path(os.environ.get("LAMES_NB_OUT", "out"))
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)

recipe = load_experiment("demo-site-detection")
if SIZE == "small":
    recipe = dataclasses.replace(recipe, patches="demo-world-patches",
                                 train={**recipe.train, "epochs": 1, "extra_per_epoch": 20},
                                 baselines=("index",), evaluate={"split": "test", "samples": 2})
recipe = dataclasses.replace(recipe, patches_output=str(OUT / f"patches-{SIZE}"))
results = run_experiment(recipe, output=OUT / f"model-{SIZE}", progress=False)
print(results["n_samples"], "test windows;", results["timings"])

# %% [markdown]
# ## Our models beside the paper

# %%
scores = {name: entry["scores"] for name, entry in
          {**results["variants"], **results["baselines"]}.items()}
table = results_table(scores, task="site")
table.round(3)

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
table["Macro F1"].plot.barh(ax=ax, color=["#e0301e" if s == "this run" else "#8899aa"
                                          for s in table["source"]])
ax.set_xlabel("macro F1 (test)")
ax.set_xlim(0, 1)
ax.invert_yaxis()
fig.savefig(FIGURES / "02_macro_f1.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# The numbers behind the figure, saved beside it: each bar's macro F1 and, for this run's
# models, the confusion matrix over the test pixels it comes from, the checkpoint or baseline
# and the patch set they were scored on.

# %%
ours = {**results["variants"], **results["baselines"]}
checkpoints = {f"U-Net {v}": str(OUT / f"model-{SIZE}" / v / "checkpoint.pt")
               for v in recipe.variants}
figure_values = {
    "task": results["task"], "split": results["split"], "classes": results["classes"],
    "n_samples": results["n_samples"], "patches": results["stores"]["sites"],
    "bands": list(recipe.bands) if recipe.bands else None,
    "baselines": list(recipe.baselines), "baseline_settings": dict(recipe.baseline),
    "bars": {name: {"macro_f1": float(row["Macro F1"]), "source": row["source"],
                    "checkpoint": checkpoints.get(name),
                    "confusion_matrix": ours[name]["confusion_matrix"] if name in ours else None}
             for name, row in table.iterrows()},
}
(FIGURES / "02_macro_f1.json").write_text(json.dumps(figure_values, indent=1))

# %% [markdown]
# The checkpoint for the next notebooks:

# %%
CHECKPOINT = OUT / f"model-{SIZE}" / "checked" / "checkpoint.pt"
print(CHECKPOINT, CHECKPOINT.exists())
