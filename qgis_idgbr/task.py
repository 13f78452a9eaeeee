"""The background job: one `idgbr.refine` call in a QgsTask, results loaded when it ends.

run() executes in a worker thread and touches nothing but the engine (no layers, no widgets);
finished() runs on the main thread and either loads the outputs or reports the error. Cancel is
the engine's own: it polls isCanceled() between tiles and removes its partial outputs.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

from pathlib import Path

from qgis.core import Qgis, QgsLayerTreeGroup, QgsMessageLog, QgsProject, QgsTask, QgsVectorLayer
from qgis.PyQt.QtCore import QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QPushButton

from .results import load_results
from .sources import RasterExport

LOG_TAG = "IDGBR"
OOM_HINT = ("the GPU ran out of memory: lower the batch size or the tile size in the advanced settings, "
            "or run on the CPU")

Notify = Callable[..., None]  # (message, level, folder=None)


def log_only(message: str, level: Qgis.MessageLevel, folder: Path | None = None) -> None:
    """The default notifier (no interface at hand): the IDGBR log tab."""
    QgsMessageLog.logMessage(message if folder is None else f"{message} ({folder})", LOG_TAG, level)


def bar_and_log(iface: Any) -> Notify:
    """Notify in the QGIS message bar (with an "Open folder" button when there is a folder to
    show: a long path does not fit the bar) and the IDGBR log tab."""
    def notify(message: str, level: Qgis.MessageLevel, folder: Path | None = None) -> None:
        log_only(message, level, folder)
        bar = iface.messageBar()
        if folder is None:
            bar.pushMessage(LOG_TAG, message, level)
            return
        item = bar.createMessage(LOG_TAG, message)
        button = QPushButton("Open folder")
        button.setToolTip(str(folder))
        button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))))
        item.layout().addWidget(button)
        bar.pushWidget(item, level)
    return notify


class RefineTask(QgsTask):
    """Refine `image` in the background; `refine_args` are `idgbr.refine`'s keyword arguments."""

    message = pyqtSignal(str)  # the engine's progress text ("tile 3/9 · ETA 12 s"), queued to the GUI
    ended = pyqtSignal()  # after finished() has loaded the layers or reported why not

    def __init__(self, image_name: str, refine_args: dict[str, Any], notify: Notify = log_only,
                 project: QgsProject | None = None, source: RasterExport | None = None,
                 coarse_layer: QgsVectorLayer | None = None, class_names: dict[int, str] | None = None) -> None:
        super().__init__(f"IDGBR: refine {image_name}", QgsTask.CanCancel)
        self.image_name = image_name
        self.refine_args = refine_args
        self.notify = notify
        self.project = project
        self.source = source  # a web image, saved as the run's image file first
        self.coarse_layer = coarse_layer  # the polygon layer refined: its style goes onto the features
        self.class_names = class_names  # legend names for classes the model leaves unnamed
        self.cancelled = False
        self.result: Any = None
        self.error: str | None = None
        self.group: QgsLayerTreeGroup | None = None

    def run(self) -> bool:
        """Worker thread: the engine only (and saving a web image for it). A run that does not
        succeed leaves no saved image behind either."""
        done = self._run()
        if not done and self.source is not None:
            self.source.path.unlink(missing_ok=True)
        return done

    def _run(self) -> bool:
        import idgbr

        def progress(fraction: float, text: str) -> None:
            self.setProgress(100.0 * fraction)
            self.message.emit(text)

        try:
            if self.source is not None:
                self.message.emit(f"saving the web map to {self.source.path.name}")
                self.refine_args["image"] = self.source.write()
            self.result = idgbr.refine(**self.refine_args, progress=progress, cancel=self.isCanceled)
        except idgbr.Cancelled:
            self.cancelled = True
            return False
        except idgbr.InputError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # noqa: BLE001 — reported in finished(); QGIS must never crash
            self.error = describe_crash(exc)
            return False
        return True

    def finished(self, result: bool) -> None:  # noqa: N802 (QgsTask API)
        """Main thread: load the layers, or say why there are none."""
        try:
            self._conclude(result)
        finally:
            self.ended.emit()

    def _conclude(self, result: bool) -> None:
        if not result:
            if self.error is not None:
                self.notify(f"Refinement of '{self.image_name}' failed: {self.error}", Qgis.Critical)
            else:
                self.cancelled = True  # QGIS's own cancel (task manager) ends here without Cancelled
                self.notify(f"Refinement of '{self.image_name}' cancelled; nothing was written.", Qgis.Info)
            return
        try:
            self.group = load_results(self.result, self.image_name, self.project, coarse_layer=self.coarse_layer,
                                      class_names=self.class_names)
        except Exception as exc:  # noqa: BLE001
            self.error = describe_crash(exc)
            self.notify(f"Refinement of '{self.image_name}' done, but loading failed: {self.error}",
                        Qgis.Critical)
            return
        areas = ", ".join(f"{name} {area:,.0f} m²" for name, area in self.result.class_areas_m2.items())
        for line in self.result.summary:  # the model, why it ran, its settings, the area refined
            log_only(line, Qgis.Info)
        features = self.result.features
        what = (f"{areas or 'no polygons'}" if features is None else
                ", ".join(f"{n} {status}" for status, n in features.statuses.items() if n)
                + f", {features.new_polygons} new")
        self.notify(f"'{self.image_name}' refined with {self.result.model} on {self.result.device} in "
                    f"{self.result.timings_s.get('total', 0):.0f} s: {what}", Qgis.Success, self.result.out_dir)


def describe_crash(exc: BaseException) -> str:
    """One line for the message bar; the traceback goes to the log tab."""
    QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in text.lower() and ("cuda" in text.lower() or "OutOfMemory" in text):
        return f"{OOM_HINT} ({text.splitlines()[0]})"
    return text
