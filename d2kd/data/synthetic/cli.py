"""``python -m d2kd.data.synthetic``: preview, statistics and rendering of the builtin datasets.

python -m d2kd.data.synthetic --preview out.png [--split val] [--num 8] [--dataset synth]
python -m d2kd.data.synthetic --render [--dataset synth] [--root DIR]
python -m d2kd.data.synthetic --stats 200 [--dataset synth] [--split train]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from PIL import Image, ImageDraw

from .cache import render_synthetic
from .render import render_image
from .spec import BUILTIN_SPECS, SPLITS, SYNTHETIC_CLASSES, SyntheticSpec

__all__ = ["main"]


def _preview(spec: SyntheticSpec, split: str, num: int, out: str, scale: int = 3) -> None:
    """Write a grid of rendered images with boxes and class names, for eyeballing the data."""
    cols = min(num, 4)
    rows = (num + cols - 1) // cols
    cell = spec.image_size * scale
    grid = Image.new("RGB", (cols * (cell + 4), rows * (cell + 4)), (255, 255, 255))
    for i in range(num):
        image, anns = render_image(spec, split, i)
        big = Image.fromarray(image).resize((cell, cell), Image.NEAREST)
        draw = ImageDraw.Draw(big)
        for ann in anns:
            x, y, w, h = (v * scale for v in ann["bbox"])
            name = SYNTHETIC_CLASSES[ann["category_id"] - 1]
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 255, 255))
            draw.text((x + 1, y - 10), name.replace("_", " "), fill=(255, 255, 255))
        grid.paste(big, ((i % cols) * (cell + 4), (i // cols) * (cell + 4)))
    grid.save(out)


def _stats(spec: SyntheticSpec, split: str, num: int) -> str:
    """Summarise object counts and sizes over the first ``num`` images of a split."""
    counts, sides = [], []
    for i in range(num):
        _, anns = render_image(spec, split, i)
        counts.append(len(anns))
        sides += [math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in anns]
    q = np.percentile(sides, [10, 50, 90])
    small = float(np.mean(np.array(sides) < 32))
    return (
        f"{num} {split} images: objects/image mean {np.mean(counts):.2f} "
        f"min {min(counts)} max {max(counts)}; box side sqrt(wh) p10/p50/p90 "
        f"{q[0]:.1f}/{q[1]:.1f}/{q[2]:.1f} px; {small:.0%} under 32 px"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m d2kd.data.synthetic``."""
    parser = argparse.ArgumentParser(
        prog="python -m d2kd.data.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", default="synth", choices=sorted(BUILTIN_SPECS))
    parser.add_argument("--preview", metavar="OUT_PNG", help="write a grid of annotated images")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--render", action="store_true", help="render the dataset into the cache")
    parser.add_argument("--stats", type=int, metavar="N", help="print statistics of N images")
    parser.add_argument("--root", help="cache root (default $D2KD_CACHE or ~/.cache/d2kd)")
    args = parser.parse_args(argv)
    spec = BUILTIN_SPECS[args.dataset]
    if not (args.preview or args.render or args.stats):
        parser.error("nothing to do: pass --preview, --render and/or --stats")
    if args.preview:
        _preview(spec, args.split, args.num, args.preview)
        print(f"wrote {args.preview}")
    if args.stats:
        print(_stats(spec, args.split, args.stats))
    if args.render:
        start = time.perf_counter()
        path = render_synthetic(spec, args.root)
        print(f"{path} ({time.perf_counter() - start:.1f}s)")
