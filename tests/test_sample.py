"""The bundled demo sample (resources/sample) is what `make demo` and the README promise."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
from shapely.geometry import box

from idgbr.datasets import load_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample"
SCENE = "43.3076215923193--83.6174134101217"


def _rasterize(layer: gpd.GeoDataFrame, ds: rasterio.DatasetReader) -> np.ndarray:
    shapes = ((g, 1) for g in layer.geometry)
    return rasterio.features.rasterize(shapes, out_shape=(ds.height, ds.width), transform=ds.transform).astype(bool)


def test_sample_files_fit_together(shared_data: Path) -> None:
    assert SCENE in load_dataset("farmland", "val", shared_data).tile_ids  # no model trained on it
    with rasterio.open(SAMPLE / "image.tif") as ds:
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (1024, 1024, 3, "uint8")
        assert ds.crs.to_epsg() == 32617 and ds.res == (1.0, 1.0)
        truth = gpd.read_file(SAMPLE / "truth.gpkg", layer="fields")
        coarse = gpd.read_file(SAMPLE / "coarse.gpkg", layer="fields")
        for layer in (truth, coarse):
            assert layer.crs == ds.crs and layer["class_id"].dtype.kind == "i" and (layer["class_id"] == 1).all()
            assert layer.within(box(*ds.bounds).buffer(1e-6)).all()
        t, c = _rasterize(truth, ds), _rasterize(coarse, ds)
    iou = (t & c).sum() / (t | c).sum()
    assert 0.75 < iou < 0.95  # degraded, but still the same fields
    assert (SAMPLE / "image.tif").stat().st_size < 3_000_000
