"""`make install`: enable the plugin in a QGIS profile, as ticking it in Plugins › Manage and Install Plugins does.

QGIS (and qgis_process) loads a Python plugin only when the profile's QGIS3.ini says
`[PythonPlugins] qgis_idgbr=true`; linking the folder into the profile is not enough. QSettings, the
writer QGIS itself uses for that file, merges the one key: the profile's other settings stay, and a
second run changes nothing.

    python resources/enable_plugin.py PROFILE_FOLDER    # e.g. ~/.local/share/QGIS/QGIS3/profiles/default
"""
from __future__ import annotations

import sys
from pathlib import Path

from qgis.PyQt.QtCore import QSettings

PLUGIN = "qgis_idgbr"


def enable(profile: Path, plugin: str = PLUGIN) -> Path:
    """Mark `plugin` enabled in the profile's QGIS3.ini (created when missing); return the file."""
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    settings = QSettings(str(ini), QSettings.IniFormat)
    settings.setValue(f"PythonPlugins/{plugin}", True)
    settings.sync()
    if settings.status() != QSettings.NoError:
        raise SystemExit(f"cannot enable {plugin}: {ini} could not be written")
    return ini


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(f"{PLUGIN} enabled in {enable(Path(sys.argv[1]).expanduser().resolve())}")
