"""Loaded by pytest before any plugin (see pytest.ini): QGIS, started by pytest-qgis, needs a
Qt platform, and tests never open a real window."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
