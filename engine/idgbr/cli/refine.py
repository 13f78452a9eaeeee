"""`idgbr refine`: the main job, with a progress bar; Ctrl-C cancels and leaves nothing."""
from __future__ import annotations

import argparse
import contextlib

from ..models.defaults import KIND_WORDS


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="refine the boundaries of a classification over an image",
                       description="Refine a coarse classification (raster or polygons) over an "
                                   "orthophoto; writes refined.tif, confidence.tif, coarse.tif and "
                                   "refined.gpkg (layers 'refined' and 'changes') to --out.")
    p.add_argument("image", help="orthophoto (any GDAL raster)")
    p.add_argument("--coarse", help="classification to refine: integer raster or polygon layer (path or "
                                    "'path|layername=NAME'); without it a coarse model makes one")
    p.add_argument("--coarse-model", help="coarse segmentor run first when there is no --coarse (default: the "
                                          "one the model card names)")
    p.add_argument("--class-field", help="integer class field of a polygon layer (default: every polygon is "
                                         "--class-value)")
    p.add_argument("--class-value", type=int, default=1, help="class of polygons without --class-field (1)")
    p.add_argument("--model", default="auto", help="refiner: model name, model folder, or cached hub id (default: "
                                                   "auto, the installed default for the coarse layer's kind; the run "
                                                   "summary names it)")
    p.add_argument("--kind", choices=sorted(KIND_WORDS), help="what the coarse layer maps, for --model auto "
                                                              "(default: guessed from its file and layer name)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--aoi", help="area to refine: polygon layer, or 'minx,miny,maxx,maxy' in the image CRS "
                                 "(default: where the coarse layer and the image overlap)")
    p.add_argument("--aoi-crs", metavar="CRS", help="CRS of an --aoi box, e.g. EPSG:4326 for lon/lat (default: the "
                                                    "image's)")
    p.add_argument("--bands", type=_ints, help="image bands to use as RGB, e.g. 3,2,1 (default: first three)")
    p.add_argument("--tile-size", type=int, help="tile size in pixels, 32–4096 (default: the model card's)")
    p.add_argument("--overlap", type=float, help="tile overlap as a fraction, 0–0.9 (default: the model card's)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per batch, 1–256; lower it when memory runs "
                                                             "out (4)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs: auto uses the GPU when torch sees one and says so (auto)")
    p.add_argument("--seed", type=int, help="random seed, for repeatable diffusion samples")
    sampling = p.add_argument_group("diffusion refiners (default: the model card's setting)")
    sampling.add_argument("--steps", type=int, help="sampling steps")
    sampling.add_argument("--guidance", type=float, help="classifier-free guidance weight (1 = none)")
    sampling.add_argument("--sampler", choices=["ddim", "ddim-trailing", "dpm++"], help="sampling scheme")
    sampling.add_argument("--samples", type=int, help="samples per tile; > 1 also writes uncertainty.tif")
    sampling.add_argument("--reach", type=int, metavar="PX",
                          help="anchored models: how far (px at the model's GSD) a boundary may move, at most "
                               "the trained band (16, the default); 2-4 for layers already close to the image")
    sampling.add_argument("--close-gate", type=float, metavar="P",
                          help="anchored models: on tiles where the layer proves already close to the image, "
                               "a pixel changes class only at probability >= P (the card's, 0.6 for buildings; "
                               "0.5 turns it off)")
    p.add_argument("--simplify", type=float, default=1.0, help="polygon simplification tolerance; shared "
                                                               "boundaries stay shared (1.0)")
    p.add_argument("--simplify-units", choices=["px", "map"], default="px",
                   help="units of --simplify: image pixels or map (CRS) units (px)")
    p.add_argument("--min-area", type=float, help="merge regions smaller than this many m² into their neighbour "
                                                  "(default: the model card's minimum mapping unit, else 16 pixels)")
    p.add_argument("--regularize", type=_ints, help="class ids whose outlines get right angles "
                                                    "(default: the model's building classes)")
    p.add_argument("--no-regularize", action="store_true", help="no right-angle regularization")
    p.add_argument("--instances", action="store_true", help="raster --coarse: keep each connected region as a "
                                                             "feature of its own (as for a polygon layer)")
    large = p.add_argument_group("large mosaics (README, 'Large mosaics')")
    large.add_argument("--scheduler", metavar="SPEC", default="",
                       help="refine on Dask: local:N (a cluster of N worker processes on this machine, started and "
                            "stopped by the run) or a scheduler address tcp://host:8786 (default: in this process)")
    large.add_argument("--block-size", type=int, metavar="N",
                       help="with --scheduler: pixels per block side, a multiple of 256 (4096)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--preview", action="store_true", help="also write preview.png (before / after)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..pipeline import refine

    regularize = () if args.no_regularize else args.regularize
    options = {k: getattr(args, k) for k in ("steps", "guidance", "sampler", "samples", "reach", "close_gate") if getattr(args, k) is not None}
    # The bar appears with the first progress report, so a refused input prints only its error.
    with logging_redirect_tqdm(), contextlib.ExitStack() as stack:
        bars: list[tqdm] = []

        def progress(fraction: float, message: str) -> None:
            if not bars:
                bars.append(stack.enter_context(tqdm(total=1000, bar_format="{percentage:3.0f}%|{bar:30}| {elapsed} "
                                                                            "{desc}")))
            bars[0].n = int(fraction * 1000)
            bars[0].set_description_str(message, refresh=True)

        result = refine(args.image, args.coarse, args.model, args.out, class_field=args.class_field,
                        class_value=args.class_value, aoi=args.aoi, aoi_crs=args.aoi_crs, kind=args.kind,
                        bands=args.bands, tile_size=args.tile_size,
                        overlap=args.overlap, batch_size=args.batch_size, device=args.device, seed=args.seed,
                        simplify=args.simplify, simplify_units=args.simplify_units, min_area_m2=args.min_area,
                        regularize_classes=regularize, overwrite=args.overwrite, preview=args.preview,
                        coarse_model=args.coarse_model, refiner_options=options, instances=args.instances,
                        scheduler=args.scheduler, progress=progress,
                        **({"block_size": args.block_size} if args.block_size else {}))
    print(f"refined {result.tiles} tiles ({result.tiles_skipped} empty skipped) on {result.device} "
          f"in {result.timings_s['total']:.1f} s → {result.out_dir}")
    for line in result.summary:
        print(f"  {line}")
    for name, area in result.class_areas_m2.items():
        if area > 0:
            print(f"  {name:<20} {area:>14,.1f} m²")
    if result.features is not None:
        print("  features: " + ", ".join(f"{n} {s}" for s, n in result.features.statuses.items())
              + f"; {result.features.new_polygons} new polygons (layer 'new')")
    return 0
