"""Exceptions the engine raises on purpose, so callers (CLI, QGIS plugin) can tell a user's
mistake from a bug and show the message as it is."""


class IdgbrError(Exception):
    """Base class of every error the engine raises deliberately."""


class InputError(IdgbrError):
    """Bad input from the user: the message names the file or parameter and the problem."""


class OutputError(IdgbrError):
    """Writing the results failed (disk full, folder removed, …): the message says where and
    why; nothing half-written is left behind."""


class Cancelled(IdgbrError):
    """The caller asked to stop; nothing was written."""
