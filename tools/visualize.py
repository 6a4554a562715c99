#!/usr/bin/env python
"""Pictures of what a KD method sees.

    python tools/visualize.py fgd --config-file configs/fgd/retinanet_R18_from_R18w_synth.py \
        --weights TEACHER.pth [--dataset synth_val] [--index 0] --output fgd.png

``fgd``: for one image, the teacher's spatial attention (FGD's A_S at the recipe's temperature)
and the foreground mask (1/area, smallest box wins) at every distilled level, next to the image
with its GT boxes.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2kd._deps import require_detectron2  # noqa: E402

require_detectron2()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper  # noqa: E402

import d2kd.data  # noqa: E402,F401
from d2kd.engine.overrides import apply_overrides  # noqa: E402
from d2kd.losses.fgd import fgd_attention, fgd_masks  # noqa: E402


def load_example(cfg, dataset: str, index: int):
    """One dataset image with GT boxes, transformed as the recipe's test mapper would."""
    dicts = DatasetCatalog.get(dataset or cfg.dataloader.test.dataset.names)
    if not 0 <= index < len(dicts):
        raise IndexError(f"[visualize] --index {index} outside {dataset} (0..{len(dicts) - 1})")
    test_mapper = cfg.dataloader.test.mapper
    mapper = DatasetMapper(
        is_train=True,  # keeps and transforms the annotations
        augmentations=[instantiate(a) for a in test_mapper.get("augmentations", [])],
        image_format=test_mapper.get("image_format", "BGR"),
    )
    return mapper(dicts[index])


def fgd_figure(args) -> str:
    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
    teacher = instantiate(cfg.model.teacher)
    if args.weights:
        teacher.load(args.weights)
    else:
        print("[visualize] no --weights: the teacher is randomly initialised")
    term = next(iter(cfg.model.terms.values()))
    levels = list(term.get("levels") or ["p3", "p4", "p5", "p6", "p7"])
    temp = float(term.get("temp", 0.5))
    example = load_example(cfg, args.dataset, args.index)
    model = teacher.model
    with torch.no_grad():
        images = model.preprocess_image([example])
        feats = model.backbone(images.tensor)
    boxes = example["instances"].gt_boxes.tensor
    padded = tuple(images.tensor.shape[-2:])
    fig, axes = plt.subplots(2, len(levels) + 1, figsize=(3 * (len(levels) + 1), 6))
    rgb = example["image"].permute(1, 2, 0).numpy()
    rgb = rgb[:, :, ::-1] if cfg.dataloader.test.mapper.get("image_format", "BGR") == "BGR" else rgb
    for ax in axes[:, 0]:
        ax.imshow(rgb)
        for x0, y0, x1, y1 in boxes.tolist():
            ax.add_patch(
                plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1)
            )
        ax.axis("off")
    axes[0, 0].set_title("image + GT")
    axes[1, 0].set_title(f"{len(boxes)} boxes")
    for j, level in enumerate(levels, start=1):
        feat = feats[level]
        spatial, _ = fgd_attention(feat, temp)
        fg, _ = fgd_masks([boxes], tuple(feat.shape[-2:]), padded_hw=padded)
        axes[0, j].imshow(spatial[0].numpy(), cmap="magma")
        axes[0, j].set_title(f"{level}: teacher A_S (T={temp})")
        axes[1, j].imshow(fg[0].numpy(), cmap="viridis")
        axes[1, j].set_title(f"{level}: foreground mask")
        for ax in axes[:, j]:
            ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    return args.output


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fgd = sub.add_parser("fgd", help="teacher spatial attention and foreground masks per level")
    fgd.add_argument("--config-file", required=True)
    fgd.add_argument("--weights", default="", help="teacher checkpoint (default: random teacher)")
    fgd.add_argument("--dataset", default="", help="dataset name (default: the recipe's test set)")
    fgd.add_argument("--index", type=int, default=0)
    fgd.add_argument("--output", default="fgd.png")
    fgd.add_argument("opts", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    print(fgd_figure(args))


if __name__ == "__main__":
    main()
