"""The same queries through a real STAC API (pgstac on 127.0.0.1) and the geoparquet index."""

from __future__ import annotations

import json

import pytest
import shapely

from lames_cube.search import search
from lames_cube.synthetic.write import read_world_stac

pytestmark = pytest.mark.stacapi


@pytest.fixture(scope="module")
def api(stac_server_env, world):  # the host check first: it fails fast
    from lames_cube.services.stac_api import StacApiServer

    collection, items = read_world_stac(world)
    with StacApiServer([collection], items) as server:
        yield server.url


def _comparable(items) -> list[dict]:
    out = []
    for item in items:
        d = item.to_dict(transform_hrefs=False)
        d.pop("links", None)
        d.pop("stac_version", None)
        d["geometry"] = shapely.normalize(shapely.geometry.shape(d["geometry"])).wkt
        out.append(json.loads(json.dumps(d, sort_keys=True)))
    return out


def _queries(world, lames_dir):
    first = json.loads(next(world.glob("stac/*/*/*.json")).read_text())
    w, s, _e, _n = shapely.geometry.shape(first["geometry"]).bounds
    geom = shapely.box(w + 0.002, s + 0.002, w + 0.006, s + 0.006)
    return {
        "bbox": {"bbox": (w + 0.001, s + 0.001, w + 0.004, s + 0.004)},
        "geometry": {"intersects": shapely.geometry.mapping(geom)},
        "dates": {"datetime": "2022-01-01/2022-06-30"},
        "cloud": {"max_cloud": 10},
        "sites": {"sites": ["2355"]},
        "combined": {"sites": ["2203"], "datetime": "2021", "max_cloud": 50, "max_nodata": 20},
    }


@pytest.mark.parametrize("name", ["bbox", "geometry", "dates", "cloud", "sites", "combined"])
def test_api_and_index_give_identical_results(api, world, lames_dir, name):
    query = _queries(world, lames_dir)[name]
    from_api = search(api, **query)
    from_index = search(world, **query)
    assert [i.id for i in from_api] == [i.id for i in from_index]
    assert len(from_index) > 0
    assert _comparable(from_api) == _comparable(from_index)


def test_api_empty_result_is_a_typed_error(api):
    from lames_cube.errors import EmptySearchError

    with pytest.raises(EmptySearchError, match="No items matched"):
        search(api, datetime="1999")
