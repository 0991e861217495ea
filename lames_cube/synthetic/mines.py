"""Mines of the synthetic world: the real LAMES sectors, growing from year to year.

Each site grows outward from its largest open pit (or its centroid): in year ``t`` of ``n`` a
sector covers its intersection with a disc whose radius rises linearly from ``start_fraction``
of the site's reach to all of it in the last year. The grown polygons are the truth: their area
per site and year is known exactly, and the same polygons are burnt into the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import shapely.affinity

from lames_cube.classes import SECTOR_MINE_CLASSES
from lames_cube.synthetic.mgrs import utm_epsg
from lames_cube.synthetic.noise import hash_uniform

#: LAMES sector classes drawn by the synthetic world (mask values 3..9, see DESIGN.md §5).
SECTOR_CLASSES = tuple(int(c) for c in SECTOR_MINE_CLASSES)


@dataclass
class MineModel:
    """The sectors of the world's sites and how they grow.

    Parameters
    ----------
    sectors
        Sector polygons with ``site_id``, ``class`` and geometry (EPSG:4326).
    years
        The years the world covers, ascending.
    start_fraction
        Radius fraction of the first year (the last year shows the full annotation).
    """

    sectors: gpd.GeoDataFrame
    years: tuple[int, ...]
    start_fraction: float = 0.55
    _utm: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _grown: dict[int, gpd.GeoDataFrame] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.sectors = self.sectors.reset_index(drop=True)
        rows = []
        for site_id, group in self.sectors.groupby("site_id", sort=True):
            lon, lat = shapely.centroid(shapely.union_all(group.geometry.values)).coords[0]
            epsg = utm_epsg(lon, lat)
            self._utm[site_id] = epsg
            local = group.to_crs(epsg)
            pits = local[local["class"] == 5]
            anchor = (pits if len(pits) else local).geometry.area.idxmax()
            center = shapely.centroid(local.geometry[anchor])
            union = shapely.union_all(local.geometry.values)
            reach = float(shapely.hausdorff_distance(center, shapely.boundary(union)))
            rows.append((site_id, epsg, center, reach))
        self._sites = pd.DataFrame(rows, columns=["site_id", "epsg", "center", "reach"]).set_index(
            "site_id"
        )

    @property
    def site_ids(self) -> list[str]:
        """Site ids, sorted."""
        return list(self._sites.index)

    def fraction(self, year: int) -> float:
        """Growth radius fraction of ``year`` (1.0 in the last year, constant outside the span)."""
        years = self.years
        if len(years) == 1 or year >= years[-1]:
            return 1.0
        if year <= years[0]:
            return self.start_fraction
        t = (year - years[0]) / (years[-1] - years[0])
        return self.start_fraction + (1.0 - self.start_fraction) * t

    def sectors_in_year(self, year: int) -> gpd.GeoDataFrame:
        """The grown sectors of ``year`` in EPSG:4326, burn order (largest first)."""
        if year not in self._grown:
            parts = []
            for site_id, row in self._sites.iterrows():
                local = self.sectors[self.sectors.site_id == site_id].to_crs(row.epsg)
                disc = shapely.buffer(row.center, row.reach * self.fraction(year) + 1e-6, quad_segs=64)
                grown = local.copy()
                grown["geometry"] = shapely.intersection(local.geometry.values, disc)
                grown = grown[~grown.geometry.is_empty]
                grown["area_m2"] = grown.geometry.area
                parts.append(grown.to_crs("EPSG:4326"))
            grown = pd.concat(parts, ignore_index=True) if parts else self.sectors.iloc[:0]
            grown = grown.sort_values(["area_m2", "Name"], ascending=[False, True], kind="stable")
            self._grown[year] = gpd.GeoDataFrame(grown, geometry="geometry", crs="EPSG:4326")
        return self._grown[year]

    def truth(self) -> pd.DataFrame:
        """True mined area per site and year (m², in the site's UTM zone).

        Returns
        -------
        pandas.DataFrame
            ``site_id``, ``year``, ``area_m2`` (the union of the grown sectors) and
            ``area_<class>_m2`` per sector class.
        """
        rows = []
        for year in self.years:
            grown = self.sectors_in_year(year)
            for site_id, epsg in self._utm.items():
                local = grown[grown.site_id == site_id].to_crs(epsg)
                row = {"site_id": site_id, "year": year}
                row["area_m2"] = float(shapely.union_all(local.geometry.values).area)
                for cls in SECTOR_CLASSES:
                    sel = local[local["class"] == cls].geometry.values
                    row[f"area_{cls}_m2"] = float(shapely.union_all(sel).area) if len(sel) else 0.0
                rows.append(row)
        return pd.DataFrame(rows)


def fallback_sites(n_sites: int = 4, seed: int = 0) -> gpd.GeoDataFrame:
    """Synthetic sectors with the LAMES schema, for when the LAMES files are not at hand.

    Sites sit in the Atacama (around 24° S, 69° W); each has an open pit ringed by waste rock,
    a tailings pond, a leach pad, a processing plant and a stockyard.

    Examples
    --------
    >>> s = fallback_sites(2)
    >>> sorted(s.site_id.unique()), sorted(s["class"].unique().tolist())
    (['90001', '90002'], [3, 5, 6, 7, 8, 9])
    """
    rows = []
    for i in range(n_sites):
        u = hash_uniform(np.array([i, i]), np.array([0, 1]), seed + 17)
        lon = -69.6 + 0.9 * float(u[0])
        lat = -25.0 + 1.6 * float(u[1])
        epsg = utm_epsg(lon, lat)
        cx, cy = gpd.GeoSeries([shapely.Point(lon, lat)], crs=4326).to_crs(epsg).iloc[0].coords[0]
        pit = shapely.Point(cx, cy).buffer(900)
        shapes = [
            (5, pit),
            (9, shapely.Point(cx, cy).buffer(2000).difference(pit.buffer(150)).intersection(
                shapely.box(cx - 2000, cy - 2000, cx + 2000, cy))),
            (8, shapely.Point(cx + 2600, cy + 1800).buffer(1000)),
            (3, shapely.box(cx - 3000, cy + 1000, cx - 1800, cy + 1900)),
            (6, shapely.box(cx + 1200, cy + 300, cx + 1700, cy + 800)),
            (7, shapely.box(cx + 1800, cy + 300, cx + 2100, cy + 600)),
        ]
        site_id = str(90001 + i)
        size = 0.5 + float(hash_uniform(np.array([i]), np.array([2]), seed + 17)[0])
        scaled = [shapely.affinity.scale(g, size, size, origin=(cx, cy)) for _, g in shapes]
        geoms = gpd.GeoSeries(scaled, crs=epsg).to_crs(4326)
        for n, ((cls, _), geom) in enumerate(zip(shapes, geoms, strict=True), start=1):
            rows.append({"Name": f"{site_id}_{n}", "class": cls, "date": pd.NA, "date2": pd.NA,
                         "system": "synthetic", "site_id": site_id, "geometry": geom})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    gdf["split"] = np.where(np.arange(len(gdf)) // 6 % 4 == 3, "test", "train")
    return gdf
