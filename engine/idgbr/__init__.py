"""IDGBR engine: refine the boundaries of a land-cover classification over an orthophoto.

    import idgbr
    result = idgbr.refine("ortho.tif", coarse="buildings.gpkg", model="identity", out_dir="out")

The engine imports no Qt or QGIS; the QGIS plugin calls `refine` with progress and cancel
callbacks.
"""
from .errors import Cancelled, IdgbrError, InputError
from .pipeline import RefineResult, refine

__version__ = "0.1.0"
__all__ = ["refine", "RefineResult", "IdgbrError", "InputError", "Cancelled", "__version__"]
