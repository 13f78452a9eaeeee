"""Tiling covers every pixel; blending gives a constant field back exactly (no seams)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from idgbr.stitch import StripAccumulator, blend_window
from idgbr.tiling import tile_rows

sizes = st.integers(min_value=1, max_value=700)
tiles = st.sampled_from([16, 32, 64, 100, 128, 256])
overlaps = st.floats(min_value=0.0, max_value=0.75)


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, tile=tiles, overlap=overlaps)
def test_tiles_cover_every_pixel_and_stay_inside(h: int, w: int, tile: int, overlap: float) -> None:
    cover = np.zeros((h, w), int)
    rows = tile_rows(h, w, tile, overlap)
    for row in rows:
        assert len({t.row for t in row}) == 1  # grouped by row of tiles, for streaming
        for t in row:
            assert t.row >= 0 and t.col >= 0
            # A tile never hangs over the edge unless the raster is smaller than a tile.
            assert t.row + tile <= h or t.row == 0
            assert t.col + tile <= w or t.col == 0
            cover[t.row:t.row + tile, t.col:t.col + tile] += 1
    assert cover.min() >= 1
    tops = [r[0].row for r in rows]
    assert tops == sorted(set(tops))


def _stitch(field: np.ndarray, tile: int, overlap: float, predict) -> np.ndarray:
    k, h, w = field.shape
    acc = StripAccumulator(k, w, tile)
    weight = blend_window(tile, int(round(tile * overlap)))
    out = np.full_like(field, np.nan)
    rows = tile_rows(h, w, tile, overlap)
    for r, row in enumerate(rows):
        for t in row:
            th, tw = min(tile, h - t.row), min(tile, w - t.col)
            acc.add(predict(t, th, tw), weight[:th, :tw], t.row, t.col)
        nxt = rows[r + 1][0].row if r + 1 < len(rows) else h
        for first, probs, wsum in acc.release(nxt):
            assert (wsum > 0).all()
            out[:, first:first + probs.shape[1]] = probs
    return out


@settings(max_examples=80, deadline=None)
@given(h=sizes, w=sizes, tile=tiles, overlap=overlaps, k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_constant_field_comes_back_exactly(h: int, w: int, tile: int, overlap: float, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    value = rng.random(k).astype(np.float32)
    field = np.broadcast_to(value[:, None, None], (k, h, w)).astype(np.float32)
    out = _stitch(field, tile, overlap, lambda t, th, tw: field[:, t.row:t.row + th, t.col:t.col + tw])
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, field, rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(h=sizes, w=sizes, tile=tiles, overlap=overlaps, seed=st.integers(0, 2**16))
def test_any_field_predicted_consistently_by_every_tile_comes_back(h, w, tile, overlap, seed) -> None:
    """When every tile agrees on the per-pixel truth, blending must reproduce it: no seams."""
    field = np.random.default_rng(seed).random((2, h, w)).astype(np.float32)
    out = _stitch(field, tile, overlap, lambda t, th, tw: field[:, t.row:t.row + th, t.col:t.col + tw])
    np.testing.assert_allclose(out, field, rtol=1e-5, atol=1e-6)


def test_blend_window_overlaps_sum_to_one() -> None:
    tile, ramp = 64, 16
    w = blend_window(tile, ramp)[tile // 2]  # a row through the flat centre
    assert w.min() > 0
    # Two tiles overlapping by `ramp` pixels: their ramps are complementary.
    np.testing.assert_allclose(w[-ramp:] + w[:ramp], 1.0, atol=1e-6)
    assert np.all(w[ramp:-ramp] == 1.0)
