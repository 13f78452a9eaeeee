"""Library chatter (geopandas/pyproj UserWarnings, transformers' and diffusers' loading bars and
notices) goes to the `idgbr` log, not to the user's terminal or the QGIS Python console: the
command line shows the log with -v, QGIS in its log tab."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

log = logging.getLogger("idgbr.libraries")
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}


def route_warnings() -> None:
    """Process-wide, for the command line: Python warnings become DEBUG records of the log
    (shown with -v); the libraries' loading bars and notices are off."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.showwarning = _log_warning


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: object = None, line: str | None = None) -> None:
    log.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """While loading models: warnings are logged instead of printed, and transformers/diffusers
    neither print notices nor draw loading bars (their environment switches are read when they
    are first imported; a library imported earlier is switched directly)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("transformers", "diffusers"):
        utils = sys.modules.get(f"{name}.utils.logging")
        if utils is not None:
            utils.disable_progress_bar()
            utils.set_verbosity_error()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                _log_warning(w.message, w.category, w.filename, w.lineno)
