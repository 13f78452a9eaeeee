"""Exceptions the engine raises on purpose, so callers (CLI, QGIS plugin) can tell a user's
mistake from a bug and show the message as it is."""
from __future__ import annotations

from pathlib import Path


class IdgbrError(Exception):
    """Base class of every error the engine raises deliberately."""


class InputError(IdgbrError):
    """Bad input from the user: the message names the file or parameter and the problem."""


class ResultsExist(InputError):
    """The output folder already holds results and overwriting was not allowed. The message tells
    the CLI's way to allow it; other callers (Processing) word theirs with `message`."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder, self.names = folder, names
        super().__init__(self.message("allow overwriting (--overwrite)"))

    def message(self, how_to_overwrite: str) -> str:
        shown = ", ".join(self.names[:3]) + (f" and {len(self.names) - 3} more" if len(self.names) > 3 else "")
        return (f"output folder {self.folder} already holds results ({shown}); "
                f"choose another folder or {how_to_overwrite}")


class OutputError(IdgbrError):
    """Writing the results failed (disk full, folder removed, …): the message says where and
    why; nothing half-written is left behind."""


class Cancelled(IdgbrError):
    """The caller asked to stop; nothing was written."""
