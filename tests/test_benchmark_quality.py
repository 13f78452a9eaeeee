"""`idgbr benchmark quality` on six real buildings val tiles: the identity row is the coarse map
scored, every refiner sees the same coarse tiles, runs are reproducible, coarse tiles can come
from a folder, and bad names are InputErrors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idgbr.benchmarks.quality import COLUMNS, benchmark_quality, load_tiles
from idgbr.cli import main
from idgbr.datasets import load_dataset
from idgbr.errors import InputError
from idgbr.evaluate import evaluate_pairs
from idgbr.models import ModelCard, TileBatch, one_hot, register_refiner

CLASSICAL = ["identity", "crf", "guided", "morph"]
ARGS = dict(dataset="buildings", split="val", coarse="buildings-osm", limit=6, seed=3, progress=False)
COUNTS = ("num_tiles", "num_classes", "ignore_index", "class_id")


@register_refiner("spy")
class SpyRefiner:
    """Returns the coarse map and remembers, per model name, every coarse batch it was given."""

    seen: dict[str, list[np.ndarray]] = {}
    nfe_per_tile = 4

    def __init__(self, card: ModelCard, **_) -> None:
        self.card = card
        self.seen[card.name] = []

    def bind_classes(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def predict(self, batch: TileBatch) -> np.ndarray:
        self.seen[self.card.name].extend(batch.coarse.copy())
        return one_hot(batch.coarse, self.num_classes)


def spy_folder(root: Path, name: str) -> str:
    ModelCard(name=name, refiner="spy").save(root / name)
    return str(root / name)


@pytest.fixture(scope="module")
def tiles(shared_data: Path):
    return load_tiles(load_dataset("buildings", "val", shared_data), "buildings-osm", seed=3, limit=6, progress=False)


@pytest.fixture(scope="module")
def rows(shared_data: Path):
    return benchmark_quality(refiners=CLASSICAL, root=shared_data, **ARGS)


def test_identity_row_is_the_coarse_map_scored(rows, tiles) -> None:
    identity = rows[0]
    assert identity["refiner"] == "identity" and identity["tiles"] == 6
    expected = evaluate_pairs([(t.coarse, t.gt, t.coarse) for t in tiles], num_classes=2)
    assert identity["metrics"] == expected
    assert identity["repair_iou"] == 0.0 and identity["preserve_iou"] == 1.0
    assert identity["miou"] == expected["miou"] and identity["boundary_iou3"] == expected["boundary_iou"]["3"]


def test_limit_spreads_tiles_over_the_places_of_the_split(tiles) -> None:
    assert len({t.tile_id.split("/")[0] for t in tiles}) > 1


def test_every_row_is_complete_and_in_range(rows) -> None:
    def fractions(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from fractions(v, k)
        elif isinstance(value, list):
            for v in value:
                yield from fractions(v, key)
        elif key not in COUNTS:
            yield key, value

    assert [r["refiner"] for r in rows] == CLASSICAL
    for r in rows:
        assert {"dataset", "split", "coarse", "seed", "tiles", "megapixels", "machine"} <= set(r)
        assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
        assert r["nfe_per_tile"] == 0 and r["s_per_mpx"] > 0
        for _, key in COLUMNS:
            assert 0.0 <= r[key] <= 1.0, (r["refiner"], key)
        for key, v in fractions(r["metrics"]):
            assert v is None or 0.0 <= v <= 1.0, (r["refiner"], key)
    assert any(r["metrics"] != rows[0]["metrics"] for r in rows[1:])  # the baselines do change something


def test_every_refiner_and_every_run_sees_the_same_coarse_tiles(shared_data: Path, tmp_path: Path, tiles,
                                                                 rows) -> None:
    spies = [spy_folder(tmp_path, "spy_a"), spy_folder(tmp_path, "spy_b")]

    def run(seed: int, names: list[str]) -> tuple[list[dict], list[np.ndarray]]:
        out = benchmark_quality(refiners=names, root=shared_data, **{**ARGS, "seed": seed})
        return out, SpyRefiner.seen["spy_a"][1:]  # [0] is the warm-up tile

    first, coarse = run(3, spies)
    assert len(coarse) == 6 and all(np.array_equal(c, t.coarse) for c, t in zip(coarse, tiles))
    assert all(np.array_equal(a, b) for a, b in zip(coarse, SpyRefiner.seen["spy_b"][1:]))
    assert first[0]["nfe_per_tile"] == 4 and first[0]["metrics"] == rows[0]["metrics"]  # spy = identity
    again, coarse_again = run(3, spies[:1])
    assert all(np.array_equal(a, b) for a, b in zip(coarse, coarse_again))
    assert again[0]["metrics"] == first[0]["metrics"]
    _, other = run(4, spies[:1])
    assert not all(np.array_equal(a, b) for a, b in zip(coarse, other))


def test_folder_of_coarse_tiles(shared_data: Path, tmp_path: Path, tiles, rows, capsys) -> None:
    folder = tmp_path / "coarse"
    for i, t in enumerate(tiles):  # half named by tile id (area sub-folders), half flat by stem
        path = folder / f"{t.tile_id}.png" if i % 2 else folder / f"{t.tile_id.split('/')[-1]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(t.coarse * np.uint8(255)).save(path)
    out, figure = tmp_path / "rows.json", tmp_path / "figure.png"
    assert main(["benchmark", "quality", "--dataset", "buildings", "--coarse", str(folder), "--refiners",
                 "identity", "--limit", "6", "--json", str(out), "--figure", str(figure)]) == 0
    assert "| identity |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert row["coarse"] == str(folder) and row["metrics"] == rows[0]["metrics"]
    with Image.open(figure) as im:
        assert im.width > 3.5 * im.height > 0  # four square panels side by side, titles above

    Image.fromarray(np.full_like(tiles[0].coarse, 7)).save(folder / f"{tiles[0].tile_id.split('/')[-1]}.png")
    with pytest.raises(InputError, match=r"outside 0\.\.1"):
        benchmark_quality(refiners=["identity"], root=shared_data, **{**ARGS, "coarse": folder})
    (folder / f"{tiles[0].tile_id.split('/')[-1]}.png").unlink()
    with pytest.raises(InputError, match="no coarse tile for 1 of 6"):
        benchmark_quality(refiners=["identity"], root=shared_data, **{**ARGS, "coarse": folder})


@pytest.mark.parametrize("change, message", [
    ({"dataset": "nope"}, "unknown dataset 'nope'"),
    ({"coarse": "nope"}, "neither a folder nor a recipe"),
    ({"refiners": ["identity", "nope"]}, "unknown model 'nope'"),
    ({"refiners": ["identity", "identity"]}, "each once"),
    ({"limit": 0}, "at least 1"),
])
def test_bad_names_are_input_errors(shared_data: Path, change: dict, message: str) -> None:
    kwargs = {**ARGS, "refiners": ["identity"], **change}
    with pytest.raises(InputError, match=message):
        benchmark_quality(root=shared_data, **kwargs)


def test_cli_reports_bad_names(capsys) -> None:
    assert main(["benchmark", "quality", "--dataset", "buildings", "--coarse", "nope", "--refiners", "identity"]) == 2
    assert "neither a folder nor a recipe" in capsys.readouterr().err
