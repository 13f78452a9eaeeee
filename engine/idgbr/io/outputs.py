"""Outputs that only ever appear complete.

`OutputFolder`: named results are written into a hidden staging folder inside the output folder
and moved into place when the whole run has succeeded; on any failure or cancel the staging
folder (and the folders the run created) is removed, leaving the user's files as they were.
Before starting it refuses when the estimated outputs do not fit on the disk; a write that
fails all the same (disk full, folder gone) becomes an OutputError. Staging folders that a
killed run left behind are removed by the next run into the same folder. `staged_folder`: a whole folder (a model, a set of generated pairs) is
written as a hidden sibling and replaces the target only when the writer has finished.
`write_json_report`: the `--json OUT` file of the commands that print a table.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import IdgbrError, InputError, OutputError, ResultsExist

STAGING_PREFIX = ".idgbr-staging-"


class OutputFolder:
    """`names` are the outputs a run may write; `estimate_bytes` what they will take on disk
    (checked against the free space before anything is written)."""

    def __init__(self, out_dir: str | Path, names: tuple[str, ...], overwrite: bool = False,
                 estimate_bytes: int = 0) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.names = names
        self.overwrite = overwrite
        self.estimate_bytes = estimate_bytes
        self.created: Path | None = None  # the topmost folder this run made
        self.staging: Path | None = None

    def __enter__(self) -> "OutputFolder":
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise InputError(f"output folder {out} is a file")
        existing = [n for n in self.names if (out / n).exists()]
        if existing and not self.overwrite:
            raise ResultsExist(out, existing)
        parent = out if out.exists() else next(p for p in out.parents if p.exists())
        if not parent.is_dir():
            raise InputError(f"output folder {out} cannot be created: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"output folder {out} is not writable")
        try:
            if not out.exists():
                self.created = next(p for p in [*reversed(out.parents), out] if not p.exists())
                out.mkdir(parents=True)
            remove_stale_staging(out)
            check_free_space(out, self.estimate_bytes)
            self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}@{socket.gethostname()}.",
                                                 dir=out))
        except OSError as e:
            self._remove_created()
            raise InputError(f"output folder {out} is not writable ({e.strerror})") from e
        except OutputError:
            self._remove_created()
            raise
        return self

    def path(self, name: str) -> Path:
        """Where to write output `name` while the run is in progress."""
        assert self.staging is not None and name in self.names
        return self.staging / name

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.staging is not None
        try:
            if exc_type is None:
                try:
                    for name in self.names:
                        staged = self.staging / name
                        if staged.exists():
                            os.replace(staged, self.out_dir / name)
                        elif (self.out_dir / name).exists():  # a stale result of an earlier run
                            (self.out_dir / name).unlink()
                except OSError as e:
                    exc = e
                    raise write_failure(self.out_dir, e) from e
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            if exc is not None:
                self._remove_created()
        if exc is not None and (is_write_failure(exc) or str(self.staging) in str(exc)):
            raise write_failure(self.out_dir, exc) from exc

    def _remove_created(self) -> None:
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)

    def final(self, name: str) -> Path:
        return self.out_dir / name


def is_write_failure(exc: BaseException) -> bool:
    """An OS or GDAL error while the outputs were being written (or read back from the staging
    folder); the engine's own errors, cancels and bugs pass through unchanged (except those
    about a half-written file in the staging folder, which __exit__ also reports as failed
    writes)."""
    if isinstance(exc, (IdgbrError, KeyboardInterrupt)) or not isinstance(exc, Exception):
        return False
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("rasterio", "pyogrio")


def write_failure(out_dir: Path, exc: BaseException) -> OutputError:
    """The named error for a failed write, saying when the disk is full."""
    free = _free_bytes(out_dir)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    full = getattr(exc, "errno", None) == errno.ENOSPC or "no space left" in str(exc).lower() or \
        (free is not None and free < 1 << 20)
    if full:
        return OutputError(f"writing the results to {out_dir} failed: no space left on the disk "
                           f"({_mb(free)} free now); nothing was kept. Free some space or choose another "
                           f"output folder ({text})")
    return OutputError(f"writing the results to {out_dir} failed: {text}; nothing was kept")


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start when the estimated outputs do not fit on the disk of `folder`."""
    free = _free_bytes(folder)
    if needed and free is not None and free < needed:
        raise OutputError(f"not enough free space for the results in {folder}: they need about {_mb(needed)}, "
                          f"the disk has {_mb(free)} free. Free some space, choose another output folder, "
                          "or refine a smaller area (--aoi)")


def _free_bytes(folder: Path) -> int | None:
    for p in (folder, *folder.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _mb(n: int | None) -> str:
    if n is None:
        return "unknown space"
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders that runs killed without cleaning up left in `folder` (SIGKILL,
    a QGIS crash, a power cut): those made on this machine by a process that is gone."""
    removed = []
    host = socket.gethostname()
    for p in folder.glob(f"{STAGING_PREFIX}*@*"):
        pid_text, _, rest = p.name[len(STAGING_PREFIX):].partition("@")
        if not pid_text.isdigit() or rest.rpartition(".")[0] != host or _process_alive(int(pid_text)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_target(target: str | Path, overwrite: bool = False) -> Path:
    """The absolute target folder, or an InputError when it is a file or (unless `overwrite`)
    not empty: callers check before long work, `staged_folder` again before writing."""
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise InputError(f"output folder {target} is a file")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InputError(f"output folder {target} is not empty; choose another folder or allow overwriting "
                         "(--overwrite)")
    return target


@contextmanager
def staged_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it becomes `target` (an existing non-empty `target`
    is refused unless `overwrite`, and then replaced). Parent folders this created are removed
    again on failure."""
    target = check_target(target, overwrite)
    created = next((p for p in reversed([target.parent, *target.parent.parents]) if not p.exists()), None)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".writing", dir=target.parent))
    except OSError as e:
        raise InputError(f"output folder {target} cannot be written ({e.strerror})") from e
    try:
        yield stage
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def write_json_report(path: str | Path, data: Any) -> Path:
    """`data` as strict JSON (NaN refused, so every reader can parse it), parent folders made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path
