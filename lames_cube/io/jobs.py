"""A store write as a ledger job: record it, lay out the metadata, write the regions one by one.

A region is one Zarr chunk along y and x and every time step and band; :func:`write_regions`
computes and writes one region per ``to_zarr`` call and appends one ``done`` line to the ledger
per finished region, so memory holds at most one region's chunks per worker thread and a crash
loses at most the regions under way.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from tqdm.auto import tqdm

from lames_cube._fs import StorePath
from lames_cube.errors import TemplateMismatchError
from lames_cube.io.ledger import LEDGER_VERSION, Ledger, LedgerState, Region, crash_point
from lames_cube.io.paths import claim_folder, clear_except_ledger
from lames_cube.io.template import (
    ZARR_KW,
    Prepared,
    job_id,
    metadata_template,
    template_diff,
    template_summary,
)

__all__ = [
    "begin",
    "conform",
    "full_grid",
    "resume_job",
    "start_store",
    "time_range",
    "write_metadata",
    "write_regions",
]


def _aligned_chunks(offset: int, length: int, chunk: int) -> tuple[int, ...]:
    """Chunks of ``length`` items starting at ``offset`` whose edges fall on multiples of chunk."""
    out, pos, end = [], offset, offset + length
    while pos < end:
        nxt = min((pos // chunk + 1) * chunk, end)
        out.append(nxt - pos)
        pos = nxt
    return tuple(out)


def conform(prep: Prepared, store_chunks: Mapping[Hashable, int],
            offsets: Mapping[Hashable, int]) -> Prepared:
    """Rechunk to the store's Zarr chunks, aligned with where the cube lands in the store."""
    ds = prep.ds.copy()
    for name in prep.names:
        var = prep.ds[name]
        chunks = {d: _aligned_chunks(offsets.get(d, 0), var.sizes[d], int(store_chunks[d]))
                  for d in var.dims}
        enc = dict(var.encoding)
        ds[name] = var.chunk(chunks)
        enc["chunks"] = tuple(int(store_chunks[d]) for d in var.dims)
        ds[name].encoding = enc
    return prep.replace(ds=ds)


def write_regions(prep: Prepared, path: StorePath, regions: list[Region], *,
                  t: tuple[int, int], offset: tuple[int, int], skip: LedgerState | None,
                  progress: bool, partial_time: bool = False,
                  scheduler: str | None = None) -> None:
    """Write ``regions`` (absolute indices) of the prepared cube, one ``to_zarr`` call each
    (computed by ``scheduler``, default the active one), skipping those ``skip`` has done;
    then mark the complete jobs in the ledger."""
    ledger = Ledger(path)
    data = prep.ds[prep.names].drop_vars(list(prep.ds.coords))
    sizes = {d: n for name in prep.names for d, n in prep.ds[name].sizes.items()}
    ydim, xdim = prep.spatial
    todo = [r for r in regions if skip is None or not skip.is_done(r, t)]
    bar = tqdm(total=len(regions), initial=len(regions) - len(todo), unit="region",
               desc=f"write_cube {path.name}", disable=not progress)
    written = 0
    try:
        for y0, y1, x0, x1 in todo:
            crash_point(written, "regions")
            part = data.isel({ydim: slice(y0 - offset[0], y1 - offset[0]),
                              xdim: slice(x0 - offset[1], x1 - offset[1])})
            where: dict[Hashable, slice] = {d: slice(0, n) for d, n in sizes.items()}
            if "time" in sizes:
                where["time"] = slice(*t)
            where[ydim], where[xdim] = slice(y0, y1), slice(x0, x1)
            mode = "a" if partial_time else "r+"
            if scheduler is None:
                part.to_zarr(str(path), region=where, mode=mode, **ZARR_KW)
            else:
                part.to_zarr(str(path), region=where, mode=mode, compute=False,
                             **ZARR_KW).compute(scheduler=scheduler)
            ledger.append({"event": "done", "t": list(t), "y": [y0, y1], "x": [x0, x1]})
            written += 1
            bar.update(1)
    finally:
        bar.close()
    ledger.mark_complete()


def time_range(prep: Prepared) -> tuple[int, int]:
    """The job's time range: all of the cube's time steps, or ``(0, 0)`` without a time dim."""
    return (0, prep.var.sizes["time"]) if "time" in prep.var.dims else (0, 0)


def full_grid(prep: Prepared) -> dict[str, list[int]]:
    """``[start, stop, chunk]`` per spatial dim, for a job covering the whole cube."""
    ydim, xdim = prep.spatial
    return {ydim: [0, prep.var.sizes[ydim], int(prep.chunks[ydim])],
            xdim: [0, prep.var.sizes[xdim], int(prep.chunks[xdim])]}


def begin(path: StorePath, prep: Prepared, op: str, t: tuple[int, int]) -> str:
    """Record a job (``op`` over the time range ``t``) in the ledger. Returns its id."""
    template = template_summary(prep)
    job = job_id(template, list(t))
    Ledger(path).append({"event": "begin", "lames_ledger": LEDGER_VERSION, "job": job, "op": op,
                         "time": list(t), "grid": full_grid(prep), "template": template})
    return job


def write_metadata(prep: Prepared, path: StorePath, job: str, *,
                   append_dim: str | None = None) -> None:
    """Write the store's metadata (no pixels) and record it for ``job``."""
    # mode="a": the directory already holds the ledger, which mode="w" would delete.
    metadata_template(prep).to_zarr(str(path), mode="a", append_dim=append_dim, compute=False,
                                    **ZARR_KW)
    Ledger(path).append({"event": "metadata", "job": job})


def resume_job(prep: Prepared, path: StorePath, state: LedgerState,
               mismatch: str) -> LedgerState:
    """Find the ledger's job for ``prep`` (refusing another cube's store with ``mismatch``,
    formatted with ``path`` and ``diff``) and redo its metadata if a crash cut it short.

    Raises
    ------
    lames_cube.errors.TemplateMismatchError
        The ledger has no job for this cube.
    """
    template = template_summary(prep)
    job = job_id(template, list(time_range(prep)))
    if job not in state.jobs:
        known = [j for j in state.jobs.values() if j["op"] in ("write", "init")]
        diff = template_diff(known[0]["template"], template) if known else []
        raise TemplateMismatchError(mismatch.format(
            path=repr(str(path)), diff="; ".join(diff) or "no matching job in the ledger"))
    if job not in state.metadata:  # crashed while writing the metadata: redo it
        clear_except_ledger(path)
        write_metadata(prep, path, job)
        state = Ledger(path).read()
    return state


def start_store(prep: Prepared, path: StorePath, mode: str, op: str) -> str:
    """Check the path for ``mode``, record the job and write the metadata. Returns the job id.

    Raises
    ------
    lames_cube.errors.StoreExistsError
        A store exists and ``mode`` is not ``"w"``.
    """
    claim_folder(path, mode, "the same cube")
    t = time_range(prep)
    job = begin(path, prep, op, t)
    write_metadata(prep, path, job)
    return job
