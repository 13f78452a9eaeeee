"""What both algorithms share: engine progress/cancel bridged to Processing feedback, errors."""
from __future__ import annotations

from typing import Callable

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from ..sources import SourceError


def bridge(feedback: QgsProcessingFeedback) -> tuple[Callable[[float, str], None], Callable[[], bool]]:
    """The engine's progress and cancel callbacks, feeding a Processing feedback."""
    last = {"text": ""}

    def progress(fraction: float, text: str) -> None:
        feedback.setProgress(100.0 * fraction)
        if text != last["text"]:
            feedback.setProgressText(text)
            last["text"] = text

    return progress, feedback.isCanceled


def engine_errors(run: Callable[[], dict]) -> dict:
    """Run the engine; unreadable layers, its named errors (bad input, failed writes) and cancels become
    QgsProcessingException (what Processing shows the user as "ERROR: …") instead of tracebacks."""
    import idgbr
    from idgbr.errors import ResultsExist

    try:
        return run()
    except idgbr.Cancelled as exc:
        raise QgsProcessingException("cancelled; nothing was written") from exc
    except ResultsExist as exc:  # the engine's text names the CLI's --overwrite
        raise QgsProcessingException(exc.message("turn on 'Overwrite existing results' (OVERWRITE=true)")) from exc
    except (idgbr.IdgbrError, SourceError) as exc:
        raise QgsProcessingException(str(exc)) from exc
