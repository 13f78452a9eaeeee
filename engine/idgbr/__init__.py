"""IDGBR engine: refine the boundaries of a land-cover classification over an orthophoto.

    import idgbr
    result = idgbr.refine("ortho.tif", coarse="buildings.gpkg", model="auto", out_dir="out")

The engine imports no Qt or QGIS; the QGIS plugin calls `refine` with progress and cancel
callbacks. `refine` and `RefineResult` are imported on first use, so `import idgbr` (and so
`idgbr --help`) does not load the geodata libraries.
"""
from typing import Any

from .errors import Cancelled, IdgbrError, InputError, OutputError

__version__ = "0.1.0"
__all__ = ["refine", "RefineResult", "IdgbrError", "InputError", "OutputError", "Cancelled", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("refine", "RefineResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
