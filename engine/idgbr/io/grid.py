"""The target grid every array is aligned to: a window of the image raster, with its CRS and
transform always travelling with it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window, bounds as window_bounds, transform as window_transform


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine  # of pixel (0, 0) of this grid
    width: int
    height: int

    @classmethod
    def of_window(cls, crs: CRS, image_transform: Affine, window: Window) -> "Grid":
        return cls(crs, window_transform(window, image_transform), int(window.width), int(window.height))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return window_bounds(Window(0, 0, self.width, self.height), self.transform)

    def strip(self, row: int, rows: int) -> "Grid":
        """The sub-grid of rows [row, row + rows)."""
        rows = min(rows, self.height - row)
        return Grid(self.crs, self.transform * Affine.translation(0, row), self.width, rows)

    def pixel_area(self) -> float:
        """Area of one pixel in CRS units²."""
        return abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)

    def strips(self, rows: int) -> list[tuple[int, "Grid"]]:
        return [(r, self.strip(r, rows)) for r in range(0, self.height, rows)]


def pixel_ground_area(grid: Grid) -> float:
    """Ground area in m² of the grid's centre pixel (geodesic, so right in any CRS)."""
    from pyproj import Geod, Transformer

    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    col, row = grid.width // 2, grid.height // 2
    corners = [grid.transform * (col + dc, row + dr) for dc, dr in ((0, 0), (1, 0), (1, 1), (0, 1))]
    lon, lat = to_lonlat.transform(*zip(*corners))
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)
    return abs(area)


def boxes_intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def empty_like_rows(grid: Grid, fill: int, dtype: type = np.uint8) -> np.ndarray:
    return np.full((grid.height, grid.width), fill, dtype)
