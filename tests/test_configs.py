"""Every training config the repository ships loads with its command's schema (unknown keys are
refused), so a documented command line cannot fail on its own config."""
from __future__ import annotations

from pathlib import Path

import pytest

from idgbr.anchored.train import AnchoredConfig
from idgbr.diffusion.config import DiffusionConfig
from idgbr.segment import CoarseConfig
from idgbr.synth.config import SynthConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "resources" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_loads(path: Path) -> None:
    kind = (CoarseConfig if path.stem.startswith("coarse-") else SynthConfig if path.stem.startswith("synth-")
            else AnchoredConfig if path.stem.startswith("anchored-") else DiffusionConfig)
    cfg = kind.load(path)
    assert cfg.name and cfg.out


def test_configs_are_found() -> None:
    assert len(CONFIGS) >= 10
