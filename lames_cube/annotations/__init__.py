"""The LAMES annotation files, loaded, cleaned and checked.

The files are read from a data directory (see :func:`lames_cube.config.find_data_dir`), never
copied into the package; :func:`download_lames` fetches them from the paper's repository and
checks each against its git blob id.

Every loader cleans what it reads (Z dropped, invalid polygons repaired, padding stripped,
impossible dates set to NaT, ``site_id`` as ``str``, KML leftovers dropped) and describes the
repairs in a :class:`CleaningReport`. Pass ``report=True`` to get it: the loader then returns
``(frame, report)`` and emits no warning. With ``report=False`` (the default) the loader returns
the frame alone and, when values were lost (impossible dates), says so in an
:class:`AnnotationRepairWarning` that lists them: data is never dropped silently. Library code
that loads annotations should pass ``report=True`` (and may ignore the report).

The modules, one job each:

- :mod:`lames_cube.annotations.lames` -- the Chile sectors, sites and Maus footprints
  (:func:`load_sectors`, :func:`load_sites`, :func:`load_footprints`, :func:`select_sites`);
- :mod:`lames_cube.annotations.metadata` -- the site metadata table (:func:`load_metadata`);
- :mod:`lames_cube.annotations.ghana` -- the Ghana ASM file (:func:`load_asm`);
- :mod:`lames_cube.annotations.clean` -- the cleaning every loader does, and its report;
- :mod:`lames_cube.annotations.download` -- the data directory: download, verify, find a file;
- :mod:`lames_cube.annotations.checks` -- whether polygons can be rasterised as given.

Examples
--------
>>> sectors = load_sectors(report=True)[0]
>>> sites = load_sites("all")
>>> sites.split.value_counts().to_dict(), bool(sites.site_id.isin(sectors.site_id).all())
({'train': 104, 'test': 35}, True)
"""

from lames_cube.annotations.checks import check_annotations
from lames_cube.annotations.clean import CleaningReport, GeometryRepair, ValueRepair
from lames_cube.annotations.download import (
    LAMES_COMMIT,
    LAMES_MANIFEST,
    LAMES_REPOSITORY,
    download_lames,
    git_blob_sha1,
    verify_lames,
)
from lames_cube.annotations.ghana import load_asm
from lames_cube.annotations.lames import (
    FOOTPRINTS_FILE,
    SECTORS_FILE,
    SPLITS,
    load_footprints,
    load_sectors,
    load_sites,
    select_sites,
)
from lames_cube.annotations.metadata import (
    METADATA_COLUMNS,
    METADATA_FILE,
    METADATA_GROUPS,
    load_metadata,
    parse_coordinate,
)
from lames_cube.errors import AnnotationRepairWarning

__all__ = [
    "FOOTPRINTS_FILE",
    "LAMES_COMMIT",
    "LAMES_MANIFEST",
    "LAMES_REPOSITORY",
    "METADATA_COLUMNS",
    "METADATA_FILE",
    "METADATA_GROUPS",
    "SECTORS_FILE",
    "SPLITS",
    "AnnotationRepairWarning",
    "CleaningReport",
    "GeometryRepair",
    "ValueRepair",
    "check_annotations",
    "download_lames",
    "git_blob_sha1",
    "load_asm",
    "load_footprints",
    "load_metadata",
    "load_sectors",
    "load_sites",
    "parse_coordinate",
    "select_sites",
    "verify_lames",
]
