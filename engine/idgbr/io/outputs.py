"""Outputs that only ever appear complete.

`OutputFolder`: named results are written into a hidden staging folder inside the output folder
and moved into place when the whole run has succeeded; on any failure or cancel the staging
folder (and the output folder itself, if the run created it) is removed, leaving the user's
files as they were. `staged_folder`: a whole folder (a model, a set of generated pairs) is
written as a hidden sibling and replaces the target only when the writer has finished.
`write_json_report`: the `--json OUT` file of the commands that print a table.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import InputError, ResultsExist


class OutputFolder:
    def __init__(self, out_dir: str | Path, names: tuple[str, ...], overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.names = names
        self.overwrite = overwrite
        self.created = False
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
                out.mkdir(parents=True)
                self.created = True
            self.staging = Path(tempfile.mkdtemp(prefix=".idgbr-staging-", dir=out))
        except OSError as e:
            raise InputError(f"output folder {out} is not writable ({e.strerror})") from e
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
                for name in self.names:
                    staged = self.staging / name
                    if staged.exists():
                        os.replace(staged, self.out_dir / name)
                    elif (self.out_dir / name).exists():  # a stale result of an earlier run
                        (self.out_dir / name).unlink()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            if exc_type is not None and self.created:
                shutil.rmtree(self.out_dir, ignore_errors=True)

    def final(self, name: str) -> Path:
        return self.out_dir / name


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
