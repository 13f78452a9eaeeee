"""Draw resources/icons/idgbr.png: a crisp polygon outline refining a blurry one on a map tile.

Kept next to the icon so the PNG can be regenerated (Debian's python3-pil is enough):
    /usr/bin/python3 resources/icons/draw_icon.py
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
SCALE = 4  # draw large, then downsample: cheap anti-aliasing
OUT = Path(__file__).with_name("idgbr.png")


def _px(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Icon coordinates (0..128) to the supersampled canvas."""
    return [(x * SCALE, y * SCALE) for x, y in points]


def draw() -> Image.Image:
    """The tile, the coarse blob (blurred) and the refined outline (crisp)."""
    big = SIZE * SCALE
    tile = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(tile)
    d.rounded_rectangle((4 * SCALE, 4 * SCALE, 124 * SCALE, 124 * SCALE), radius=14 * SCALE,
                        fill=(226, 232, 214, 255), outline=(120, 130, 110, 255), width=2 * SCALE)
    for v in range(28, 124, 24):  # faint map grid
        d.line(_px([(v, 8), (v, 120)]), fill=(200, 208, 188, 255), width=SCALE)
        d.line(_px([(8, v), (120, v)]), fill=(200, 208, 188, 255), width=SCALE)

    coarse = [(28, 44), (70, 30), (100, 52), (98, 96), (56, 104), (30, 88)]  # the map's guess
    blob = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    ImageDraw.Draw(blob).polygon(_px(coarse), fill=(232, 110, 50, 230))
    tile.alpha_composite(blob.filter(ImageFilter.GaussianBlur(6 * SCALE)))

    building = [(34, 40), (84, 32), (94, 84), (44, 94)]  # the refined boundary
    ImageDraw.Draw(tile).line(_px(building + building[:1]), fill=(20, 60, 170, 255), width=5 * SCALE, joint="curve")
    return tile.resize((SIZE, SIZE), Image.LANCZOS)


if __name__ == "__main__":
    draw().save(OUT, optimize=True)
    print(OUT)
