"""The LAMES data directory: download the files from the paper's repository, verify them
against their git blob ids, and find a file in the directory.

The files are read from a data directory (see :func:`lames_cube.config.find_data_dir`), never
copied into the package; :func:`download_lames` fetches them and checks each against its git
blob id (:data:`LAMES_MANIFEST`); :func:`verify_lames` checks a directory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

from lames_cube._atomic import atomic_write_bytes
from lames_cube.config import find_data_dir
from lames_cube.errors import DataDirError, InvalidQueryError

__all__ = [
    "LAMES_COMMIT",
    "LAMES_MANIFEST",
    "LAMES_REPOSITORY",
    "data_file",
    "download_lames",
    "git_blob_sha1",
    "verify_lames",
]

LAMES_REPOSITORY = "chenzhaiyu/mineseg"
LAMES_COMMIT = "078fee6820f7d907d9c0bd1a95e4ddb0b2d2aabc"

#: The LAMES files at :data:`LAMES_COMMIT`: path → (git blob id prefix, size in bytes), as in
#: ``shared/lames/MANIFEST.md``. (``annotations/Ghana_ASM.geojson`` is in the repository but has
#: no recorded blob id, so it is not downloaded.)
LAMES_MANIFEST: Mapping[str, tuple[str, int]] = {
    "annotations/Chile_LSM_sectors.geojson": ("02333703", 2_945_808),
    "annotations/Chile_LSM_sites_Maus_et_al_subset.geojson": ("2e91f2be", 398_585),
    "annotations/train_sites.geojson": ("74fc7a87", 1_920_653),
    "annotations/test_sites.geojson": ("1431cd36", 615_874),
    "annotations/metadata.csv": ("5757a0c7", 56_986),
    "annotations/metadata_stats.xlsx": ("8da7fbdf", 64_185),
    "annotations/metadata-sources.txt": ("bd20f740", 1_054),
    "annotations/annotation_doc.pdf": ("4bb67d1f", 106_886),
    "SectorDetection/MiningSiteSector_TrainValidTestSplit.xlsx": ("f183bca9", 9_943),
}


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what ``git hash-object FILE`` prints).

    Examples
    --------
    >>> git_blob_sha1(b"")
    'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    >>> git_blob_sha1(b"hello\\n")
    'ce013625030ba8dba906f756967f9e9ca394464a'
    """
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _check_blob(relative: str, data: bytes, where: str) -> str:
    prefix, size = LAMES_MANIFEST[relative]
    blob = git_blob_sha1(data)
    if not blob.startswith(prefix) or len(data) != size:
        raise DataDirError(
            f"{where} is not the LAMES file {relative} of {LAMES_REPOSITORY}@{LAMES_COMMIT[:7]}: "
            f"git blob {blob[:8]} and {len(data):,} bytes, expected blob {prefix} and {size:,} "
            "bytes. Download it again with lames_cube.annotations.download_lames(dest)."
        )
    return blob


def _manifest_files(files: Iterable[str] | None) -> list[str]:
    wanted = list(LAMES_MANIFEST) if files is None else [str(f) for f in files]
    unknown = [f for f in wanted if f not in LAMES_MANIFEST]
    if unknown:
        raise InvalidQueryError(
            f"{unknown} are not LAMES files with a known blob id; choose from {list(LAMES_MANIFEST)}."
        )
    return wanted


def verify_lames(data_dir: str | os.PathLike | None = None, files: Iterable[str] | None = None,
                 *, missing_ok: bool = False) -> dict[str, str]:
    """Check LAMES files in a data directory against their git blob ids.

    Parameters
    ----------
    data_dir
        The directory to check (it may hold only some of the files); by default the LAMES
        data directory (``LAMES_DATA_DIR`` or ``../shared/lames``).
    files
        Paths relative to the directory (keys of :data:`LAMES_MANIFEST`); default all.
    missing_ok
        Skip files that are absent instead of raising.

    Returns
    -------
    dict
        Path → full git blob id, for the files checked.

    Raises
    ------
    DataDirError
        A file is missing (unless ``missing_ok``) or differs from the published one.

    Examples
    --------
    >>> verify_lames(files=["annotations/metadata.csv"])  # doctest: +ELLIPSIS
    {'annotations/metadata.csv': '5757a0c7...'}
    """
    root = Path(data_dir) if data_dir is not None else find_data_dir(None)
    out = {}
    for relative in _manifest_files(files):
        path = root / relative
        if not path.is_file():
            if missing_ok:
                continue
            raise DataDirError(f"{path} is missing; run download_lames({str(root)!r}).")
        out[relative] = _check_blob(relative, path.read_bytes(), str(path))
    return out


def download_lames(
    dest: str | os.PathLike,
    *,
    commit: str = LAMES_COMMIT,
    files: Iterable[str] | None = None,
    overwrite: bool = False,
    timeout: float = 60.0,
    session: Any = None,
) -> Path:
    """Download the LAMES annotation files from the paper's repository, checked by blob id.

    Each file is fetched from ``raw.githubusercontent.com/chenzhaiyu/mineseg/<commit>/<path>``,
    checked against :data:`LAMES_MANIFEST` (git blob id and size) and written atomically (a
    temporary name, then a rename). Files already present with the right blob id are kept.

    Parameters
    ----------
    dest
        The data directory to fill (created if needed); afterwards usable as ``data_dir=``.
    commit
        The repository commit. Blob ids are known only for :data:`LAMES_COMMIT`.
    files
        Paths to fetch (keys of :data:`LAMES_MANIFEST`); default all.
    overwrite
        Download even files that are present and correct.
    timeout
        Seconds per request.
    session
        A ``requests.Session``-like object (``.get(url, timeout=...)``); default a new session.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    InvalidQueryError
        ``commit`` is not :data:`LAMES_COMMIT` (no blob ids to check against), or unknown files.
    DataDirError
        A download failed or its content does not match the blob id; nothing is written then.

    Examples
    --------
    Needs the internet (raw.githubusercontent.com), so it is shown, not run as a doctest::

        download_lames("data/lames")  # -> PosixPath('data/lames')
    """
    if commit != LAMES_COMMIT:
        raise InvalidQueryError(
            f"commit={commit!r}: blob ids are known only for {LAMES_COMMIT}; download that commit "
            "(the default) so that the files can be checked."
        )
    wanted = _manifest_files(files)
    dest = Path(dest)
    if session is None:
        session = requests.Session()
    for relative in wanted:
        target = dest / relative
        if target.is_file() and not overwrite:
            try:
                _check_blob(relative, target.read_bytes(), str(target))
                continue
            except DataDirError:
                pass
        url = f"https://raw.githubusercontent.com/{LAMES_REPOSITORY}/{commit}/{relative}"
        try:
            response = session.get(url, timeout=timeout)
            response.raise_for_status()
        except Exception as exc:
            raise DataDirError(
                f"Could not download {url}: {exc}. Check the connection, or copy the files from "
                f"github.com/{LAMES_REPOSITORY} into {dest} by hand."
            ) from exc
        data = response.content
        _check_blob(relative, data, url)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return dest


def data_file(data_dir: str | os.PathLike | None, relative: str) -> Path:
    """The file ``relative`` of the LAMES data directory (``data_dir``, or the default one).

    Raises
    ------
    lames_cube.errors.DataDirError
        The directory, or the file in it, is missing.
    """
    root = find_data_dir(data_dir)
    path = root / relative
    if not path.is_file():
        raise DataDirError(
            f"The LAMES data directory {str(root)!r} has no {relative}. Copy it from "
            f"github.com/{LAMES_REPOSITORY} or run lames_cube.annotations.download_lames(dest)."
        )
    return path
