"""Provider "idgbr": its id is part of every algorithm id (idgbr:refine), so it never changes."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .refine import RefineAlgorithm
from .vectorize import VectorizeAlgorithm

ICON = Path(__file__).resolve().parents[1] / "icon.png"


class IdgbrProvider(QgsProcessingProvider):
    def id(self) -> str:  # noqa: A003 (QGIS API)
        return "idgbr"

    def name(self) -> str:
        return "IDGBR"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        self.addAlgorithm(RefineAlgorithm())
        self.addAlgorithm(VectorizeAlgorithm())
