"""The ``lames-cube`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lames_cube.errors import LamesCubeError


def _cmd_demo(args: argparse.Namespace) -> None:
    from lames_cube.demo import run_demo  # local: fast --help

    run_demo(args.path, data_dir=args.data_dir, workers=args.workers, epochs=args.epochs,
             progress=not args.quiet)


def _cmd_world_create(args: argparse.Namespace) -> None:
    from lames_cube.synthetic import (  # local: fast --help
        World,
        WorldSpec,
        write_world,
    )

    spec = WorldSpec(
        seed=args.seed,
        site_ids=tuple(args.sites) if args.sites else None,
        years=tuple(args.years),
        scenes_per_year=args.scenes_per_year,
        style=args.style,
        use_lames=not args.no_lames,
        area="lames" if args.area == ["lames"] else (tuple(args.area) if args.area else None),
        hidden_mines=not args.no_hidden_mines,
        **({"n_sites": args.n_sites} if args.n_sites is not None else {}),
    )
    world = World(spec, data_dir=args.data_dir)
    last = world.truth().query(f"year == {spec.years[-1]}")
    hidden = last[last.kind == "hidden"]
    print(f"{len(world.sites)} LAMES sites, {len(hidden)} hidden mines "
          f"({hidden.area_m2.sum() / 1e6:,.1f} km² in {spec.years[-1]}, absent from the LAMES "
          f"labels), {len(world.tiles)} tiles, {len(world.scenes)} scenes")
    root = write_world(args.path, world=world, overwrite=args.overwrite, workers=args.workers)
    print(root)


def _cmd_world_check(args: argparse.Namespace) -> int:
    from lames_cube.synthetic.appearance import (  # local: fast --help
        check_appearance,
        format_appearance,
    )
    from lames_cube.synthetic.realism import (  # local: fast --help
        check_world,
        format_table,
        open_world,
    )

    world = open_world(args.path)
    table = check_world(world, args.sites, year=args.year, margin_m=args.margin_m)
    print(format_table(table))
    looks = check_appearance(world, args.sites, year=args.year, png=args.png)
    print()
    print(format_appearance(looks))
    for path in looks.get("png", []):
        print(path)
    return 1 if args.strict and not (table["passes"].all() and looks["passes"].all()) else 0


def _cmd_search(args: argparse.Namespace) -> None:
    from lames_cube.search import search  # local: fast --help

    items = search(
        args.catalog, bbox=args.bbox, sites=args.sites, datetime=args.datetime,
        collections=args.collections, max_cloud=args.max_cloud, max_nodata=args.max_nodata,
        data_dir=args.data_dir,
    )
    if args.json:
        json.dump(items.to_dict(), sys.stdout, indent=1)
        print()
        return
    for item in items:
        p = item.properties
        print(f"{item.id}  {item.datetime:%Y-%m-%d}  tile {p.get('s2:mgrs_tile')}  "
              f"cloud {p.get('eo:cloud_cover')}  baseline {p.get('s2:processing_baseline')}")
    print(f"{len(items)} items")


def _cmd_cube_build(args: argparse.Namespace) -> None:
    from lames_cube.recipes.cubes import load_recipe, replace_recipe  # local: fast --help
    from lames_cube.recipes.pipeline import run_recipe  # local: fast --help

    recipe = load_recipe(args.recipe)
    if args.catalog:
        here = Path(args.catalog).expanduser()
        catalog = str(here.absolute()) if "://" not in args.catalog and here.exists() else args.catalog
        recipe = replace_recipe(recipe, where="--catalog", catalog=catalog)
    tiles = [t for part in args.tiles for t in part.split(",") if t] if args.tiles else None
    for store in run_recipe(recipe, data_dir=args.data_dir, output=args.output,
                            overwrite=args.overwrite, progress=not args.quiet, tiles=tiles):
        print(store)


def _cmd_patches_build(args: argparse.Namespace) -> None:
    from lames_cube.recipes.patchsets import build_patch_sets  # local: fast --help

    build_patch_sets(args.recipe, data_dir=args.data_dir, output=args.output,
                     cubes_output=args.cubes_output, extra_n=args.extra_n,
                     overwrite=args.overwrite, progress=not args.quiet)


def _cmd_patches_list(args: argparse.Namespace) -> None:
    from lames_cube.recipes.patchsets import (  # local: fast --help
        list_patch_recipes,
        load_patch_recipe,
    )

    for name in list_patch_recipes():
        print(f"{name:20s} {load_patch_recipe(name).description.split('. ')[0]}")


#: ``lames-cube train --protocol lames``: the paper's full training protocol (for a GPU); the
#: recipe's other settings stay, the radiometric jitter among them (the paper had none).
FULL_PROTOCOL = {"epochs": 100, "batch_size": 64, "extra_per_epoch": None, "step_size": 2000,
                 "patience": None, "threads": None, "device": "auto"}


def _cmd_train(args: argparse.Namespace) -> None:
    from lames_cube.recipes.experiments import (  # local: fast --help
        list_experiments,
        load_experiment,
        run_experiment,
    )

    if args.list or args.recipe is None:
        for name in list_experiments():
            print(f"{name:24s} {load_experiment(name).description.split('. ')[0]}")
        return
    overrides: dict = dict(FULL_PROTOCOL) if args.protocol == "lames" else {}
    for key in ("epochs", "batch_size", "extra_per_epoch", "device", "threads", "seed",
                "num_workers"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    model = args.model or ("lames" if args.protocol == "lames" else None)
    variants = [v for part in args.variants for v in part.split(",") if v] \
        if args.variants is not None else None
    output = args.output
    if args.protocol == "lames":
        import torch  # local: optional torch

        if output is None:  # never over the small run
            output = f"{load_experiment(args.recipe).output}-lames-protocol"
        if not torch.cuda.is_available():
            print("lames-cube: note: the full LAMES protocol (U-Net/ResNet-50, 100 epochs, "
                  "batch 64, every window every epoch) runs on the CPU here: expect days, "
                  "not hours (README, 'Training and evaluation').", file=sys.stderr)
    run_experiment(args.recipe, output=output, data_dir=args.data_dir, variants=variants,
                   model=model, train_overrides=overrides, overwrite=args.overwrite,
                   progress=not args.quiet)


def _cmd_infer(args: argparse.Namespace) -> None:
    from lames_cube.recipes.country import run_inference  # local: fast --help

    output = args.output or f"runs/infer-{Path(args.recipe).stem}"
    summary = run_inference(args.recipe, args.checkpoint, output, source=args.source,
                            data_dir=args.data_dir, tiles=args.tiles, scheduler=args.scheduler,
                            workers=args.workers, patch=args.patch, overlap=args.overlap,
                            batch_size=args.batch_size, device=args.device,
                            threads=args.threads, year=args.year, overwrite=args.overwrite,
                            progress=not args.quiet, evaluate=not args.no_evaluate)
    keys = ("tiles_scored", "km2_scored", "km2_predicted_mining", "wall_seconds_this_run",
            "throughput_mpx_per_s", "peak_memory_mb")
    print("; ".join(f"{k}: {summary[k]}" for k in keys if k in summary))
    for key, value in summary.get("evaluation", {}).items():
        print(f"  {key}: {value}")
    print(f"wrote {output}/ (prediction.zarr, summary.json, polygons.parquet, map.png)")


def _cmd_cube_list(args: argparse.Namespace) -> None:
    from lames_cube.recipes.cubes import (  # local: fast --help
        list_recipes,
        load_recipe,
    )

    for name in list_recipes():
        print(f"{name:14s} {load_recipe(name).description.splitlines()[0] if load_recipe(name).description else ''}")


def _cmd_stac_serve(args: argparse.Namespace) -> None:
    from lames_cube.services import serve_forever  # local: fast --help
    from lames_cube.synthetic.write import read_world_stac  # local: fast --help

    collection, items = read_world_stac(args.world)
    serve_forever([collection], items, args.port)


def _cmd_stac_install(args: argparse.Namespace) -> int:
    import time  # local: fast --help

    from lames_cube.services import (  # local: fast --help
        prepare_server_host,
        server_host_status,
    )

    started = time.monotonic()
    done = prepare_server_host(venv_dir=args.venv_dir)
    status = server_host_status(venv_dir=args.venv_dir)
    for step in done:
        print(f"done: {step}")
    print(status.report())
    took = time.monotonic() - started
    if not status.ready:  # an install that reported success but left something missing
        print("lames-cube stac install: the host is still not ready (see MISSING above)",
              file=sys.stderr)
        return 1
    print(f"everything is ready; {'prepared' if done else 'nothing to do'} in {took:.1f} s")
    return 0


def _cmd_stac_check(args: argparse.Namespace) -> int:
    from lames_cube.services import (  # local: fast --help
        install_command,
        server_host_status,
    )

    status = server_host_status(venv_dir=args.venv_dir)
    print(status.report())
    if status.ready:
        print("everything is ready")
        return 0
    fix = install_command() + (f" --venv-dir {status.venv_dir}" if args.venv_dir else "")
    print(f"not ready: run `{fix}`"
          + ("" if status.postgres_ready or status.as_root else " after the apt command above, as root"))
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lames-cube`` (every subcommand has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="lames-cube",
        description="Find and measure mines in Sentinel-2 imagery (LAMES, at country scale).",
    )
    parser.add_argument("--data-dir", help="LAMES data directory (default: $LAMES_DATA_DIR "
                        "or ../shared/lames beside the repository)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole pipeline on the synthetic world, with a report",
                       description="Generate (or reuse) the demo world over real LAMES sites, "
                       "search it, build yearly composites, train a small U-Net, score every "
                       "site and year, measure mining extent over time against the world's "
                       "truth and write a self-contained HTML report. A rerun reuses what is "
                       "done.")
    p.add_argument("--path", help="demo folder (default: the world's folder in the cache); "
                   "the run goes to PATH/run")
    p.add_argument("--workers", type=int, help="processes for world generation")
    p.add_argument("--epochs", type=int, help="training epochs (default: the "
                   "demo-site-detection recipe's, 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    world = sub.add_parser("world", help="synthetic Sentinel-2 worlds",
                           description="Create synthetic Sentinel-2 L2A worlds and check their realism.")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="SUBCOMMAND")
    p = wsub.add_parser("create", help="write a world (COGs, STAC, geoparquet index)",
                        description="Write a synthetic world to PATH.")
    p.add_argument("path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sites", nargs="+", help="LAMES site ids (default: --n-sites by seed)")
    p.add_argument("--n-sites", type=int, help="how many LAMES sites, picked by seed (default: 4)")
    p.add_argument("--area", nargs="+", metavar="AREA",
                   help="draw every LAMES site and hidden mine in an area: 'lames' (all of them) "
                   "or WEST SOUTH EAST NORTH in degrees")
    p.add_argument("--years", type=int, nargs="+", default=[2020, 2021, 2022, 2023])
    p.add_argument("--scenes-per-year", type=int, default=2,
                   help="passes kept per relative orbit and year (Sentinel-2 flies 73)")
    p.add_argument("--style", choices=["earth-search", "earth-search-c1", "planetary-computer"], default="earth-search")
    p.add_argument("--no-lames", action="store_true", help="synthetic sites instead of LAMES")
    p.add_argument("--no-hidden-mines", action="store_true",
                   help="do not draw the Maus et al. footprints that LAMES does not label")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--workers", type=int)
    p.set_defaults(func=_cmd_world_create)
    patches = sub.add_parser("patches", help="patch sets for training",
                             description="Cut per-site cubes into training patch sets.")
    psub = patches.add_subparsers(dest="patches_command", required=True, metavar="SUBCOMMAND")
    p = psub.add_parser("build", help="make a patch recipe's train/validation/test sets",
                        description="Build (or resume) the per-site cubes of a patch recipe, cut "
                        "them into windows with the LAMES split, add the blind and checked "
                        "no-mine windows, write each set to Zarr and print the counts per split "
                        "and kind.")
    p.add_argument("recipe", help="a shipped patch recipe name (lames-cube patches list) or a "
                   "path to a .yaml file")
    p.add_argument("--output", help="folder of the patch sets (default: the recipe's output)")
    p.add_argument("--cubes-output", help="folder of the per-site cube stores (default: the cube "
                   "recipe's output)")
    p.add_argument("--extra-n", type=int, help="override extra.n (no-mine windows per rule)")
    p.add_argument("--overwrite", action="store_true", help="rewrite instead of resuming")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_patches_build)
    p = psub.add_parser("list", help="list the shipped patch recipes")
    p.set_defaults(func=_cmd_patches_list)

    p = sub.add_parser("train", help="run an experiment recipe: train, evaluate, report",
                       description="Run an experiment recipe (lames-cube train --list): build "
                       "or reuse its patch sets, fit the baselines, train one model per "
                       "variant (selected on the validation split), score every model on the "
                       "test split and write the run folder (config.yaml, checkpoints, "
                       "metrics.json, report.md with figures).")
    p.add_argument("recipe", nargs="?", help="a shipped experiment name or a .yaml path")
    p.add_argument("--list", action="store_true", help="list the shipped experiment recipes")
    p.add_argument("--output", help="the run folder (default: the recipe's output)")
    p.add_argument("--variants", action="append", help="run only these variants (a,b)")
    p.add_argument("--model", help="a model preset instead of the recipe's (small, lames)")
    p.add_argument("--protocol", choices=["lames"], help="the paper's full protocol: U-Net/"
                   "ResNet-50, 100 epochs, batch 64, every extra window every epoch, "
                   "CyclicLR 2000/2000 (for a GPU machine)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--extra-per-epoch", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true", help="retrain variants whose "
                   "checkpoint was trained with other settings (default: refuse)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("infer", help="score a recipe's mosaic with a checkpoint (resumable)",
                       description="Score every active tile of a single-area cube recipe's "
                       "mosaic grid (chile-mosaic: 1,826 tiles of 2304 px) with a checkpoint, "
                       "tile by tile on dask, into a resumable Zarr store (rerun the same "
                       "command to finish an interrupted run); then write summary.json, "
                       "evaluation.json (synthetic world), polygons.parquet and map.png.")
    p.add_argument("recipe", help="a single-area cube recipe name or .yaml path (chile-mosaic)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint of lames-cube train")
    p.add_argument("--output", help="the run folder (default: runs/infer-<recipe>)")
    p.add_argument("--source", default="world", help="'world' (the synthetic world, offline; "
                   "default) or a cube store built from the recipe (lames-cube cube build)")
    p.add_argument("--tiles", nargs="+", help="score only these tile ids (a trial run)")
    p.add_argument("--scheduler", help="'threads' (default), 'local' (a LocalCluster) or a "
                   "scheduler address tcp://host:port")
    p.add_argument("--workers", type=int, help="worker processes of --scheduler local")
    p.add_argument("--patch", type=int, help="window size (default: the checkpoint's)")
    p.add_argument("--overlap", type=int, help="window overlap in px (default ~patch/4)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, help="torch threads per task on the CPU (default 1)")
    p.add_argument("--year", type=int, help="the composite year of a store source")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a prediction store of another model or grid")
    p.add_argument("--no-evaluate", action="store_true", help="skip the evaluation")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_infer)

    p = wsub.add_parser("check", help="measure how hard a world is and how it looks, against "
                        "real imagery",
                        description="Render each site of the world at PATH cloud-free and print "
                        "its realism measures (mine/ground contrast, background texture, "
                        "random-forest F1 on RGB, on all bands and with context) beside real "
                        "LAMES imagery and the thresholds of issue 7, then its look on the "
                        "site's LAMES box (median chroma, red/blue and power-spectrum slope "
                        "over 256-px windows, per-class means and standard deviations) beside "
                        "real Sentinel-2 and the limits of issue 24.")
    p.add_argument("path", help="world directory (written by `lames-cube world create`)")
    p.add_argument("--sites", nargs="+", help="site ids (default: every site of the world)")
    p.add_argument("--year", type=int, help="year of the mines (default: the last year)")
    p.add_argument("--margin-m", type=float, default=1000.0,
                   help="ground around each site's bounding box, in metres (default: 1000)")
    p.add_argument("--png", metavar="DIR", help="also write each site's LAMES box in true "
                   "colour to DIR/site-<id>.png")
    p.add_argument("--strict", action="store_true", help="exit 1 if any site fails a threshold "
                   "of the realism measures or a limit of its look")
    p.set_defaults(func=_cmd_world_check)

    p = sub.add_parser("search", help="search a STAC API or a local index",
                       description="Search Sentinel-2 L2A items (a STAC API URL, a "
                       "stac-geoparquet file or a world directory).")
    p.add_argument("catalog")
    p.add_argument("--bbox", type=float, nargs=4, metavar=("WEST", "SOUTH", "EAST", "NORTH"))
    p.add_argument("--sites", nargs="+", help="LAMES site ids")
    p.add_argument("--datetime", help="'2021', '2021-03', or 'start/end'")
    p.add_argument("--collections", nargs="+")
    p.add_argument("--max-cloud", type=float)
    p.add_argument("--max-nodata", type=float)
    p.add_argument("--json", action="store_true", help="print the ItemCollection as JSON")
    p.set_defaults(func=_cmd_search)

    cube = sub.add_parser("cube", help="build datacubes from recipes",
                          description="Build lazy Sentinel-2 datacubes from recipes into Zarr.")
    csub = cube.add_subparsers(dest="cube_command", required=True, metavar="SUBCOMMAND")
    p = csub.add_parser("build", help="run a recipe end to end (search, cube, composite, Zarr)",
                        description="Run a cube recipe (a name in cubes/ or a YAML path) and write "
                        "its cubes to Zarr; a rerun resumes an interrupted write.")
    p.add_argument("recipe", help="recipe name (e.g. demo) or path to a YAML file")
    p.add_argument("--output", help="output store (or folder for per-site recipes)")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing stores")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--catalog", help="search this catalog instead of the recipe's (a STAC API "
                   "URL, a world folder or a stac-geoparquet file)")
    p.add_argument("--tiles", nargs="+", metavar="TILE",
                   help="single-area recipes: build only these mosaic tiles (r<row>c<col>, "
                   "space- or comma-separated), e.g. a trial run of chile-mosaic")
    p.set_defaults(func=_cmd_cube_build)
    p = csub.add_parser("list", help="list the shipped recipes", description="List the recipes in cubes/.")
    p.set_defaults(func=_cmd_cube_list)

    stac = sub.add_parser("stac", help="a local STAC API (pgstac)",
                          description="Serve a world over a real STAC API on 127.0.0.1.")
    ssub = stac.add_subparsers(dest="stac_command", required=True, metavar="SUBCOMMAND")
    p = ssub.add_parser("serve", help="serve a world until Ctrl-C",
                        description="Load a world into PostgreSQL/pgstac and serve it with "
                        "stac-fastapi-pgstac on 127.0.0.1.")
    p.add_argument("world", help="world directory")
    p.add_argument("--port", type=int, default=8081)
    p.set_defaults(func=_cmd_stac_serve)
    p = ssub.add_parser("install", help="prepare this host: PostgreSQL/PostGIS, user, server venv",
                        description="Install what the local STAC API (and its tests) need, and "
                        "nothing that is already there: PostgreSQL + PostGIS with apt-get (as "
                        "root; otherwise it prints the apt command to run as root and exits "
                        "non-zero), the 'postgres' system user (as root) and the server venv "
                        "(default: $LAMES_STAC_VENV or .venv-stacapi). The only command that "
                        "changes the host; a second run only checks.")
    p.add_argument("--venv-dir", help="server venv (default: $LAMES_STAC_VENV or "
                   "<repo>/.venv-stacapi)")
    p.set_defaults(func=_cmd_stac_install)
    p = ssub.add_parser("check", help="tell whether the host is prepared (exit 0) or not (1)",
                        description="Report what the local STAC API needs and what is missing, "
                        "changing nothing; exit 0 when ready, 1 when `lames-cube stac install` "
                        "is needed.")
    p.add_argument("--venv-dir", help="server venv (default: $LAMES_STAC_VENV or "
                   "<repo>/.venv-stacapi)")
    p.set_defaults(func=_cmd_stac_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``lames-cube``; returns the exit code (2 for bad input, with the error's message)."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except LamesCubeError as exc:
        print(f"lames-cube: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
