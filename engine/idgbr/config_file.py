"""The YAML files of the training commands: one mapping whose sections become dataclasses that
refuse unknown keys, so a typo in a config is an error rather than a silently ignored setting."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import InputError


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in `path`, or an InputError that says what is wrong with the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"config {p} is not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"config {p} must be a mapping")
    return data


def build_section(kind: type, values: dict[str, Any], where: str) -> Any:
    """`kind(**values)`, naming the unknown or wrong keys of section `where`."""
    known = {f.name for f in fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    try:
        return kind(**values)
    except TypeError as e:
        raise InputError(f"{where}: {e}") from e
