#!/usr/bin/env python
"""Pictures of what a KD method sees.

    python tools/visualize.py fgd --config-file configs/fgd/retinanet_R18_from_R18w_synth.py \
        --weights TEACHER.pth [--dataset synth_val] [--index 0] --output fgd.png

``fgd``: for one image, the teacher's spatial attention (FGD's A_S at the recipe's temperature)
and the foreground mask (1/area, smallest box wins) at every distilled level, next to the image
with its GT boxes.

    python tools/visualize.py generator --output-dir output/dfad/retinanet_R18_from_R18w_synth \
        [--config-file RECIPE] [--rows 6] [--count 8] --output generator.png

``generator`` (DFAD): generated images of a fixed noise batch at intervals of training, from the
``GeneratorStep`` hook's dumps (``<output-dir>/generator/iter_*.pt``) or, with --config-file,
from the generator state in the run's checkpoints.

    python tools/visualize.py batches --config-file RECIPE [--num-batches 2] [--scale 3] \
        --output batches.png

``batches``: the first mapped training batches exactly as the recipe's train loader hands them to
the model (after the mapper's augmentations), with their GT boxes and class names: to check that
images and labels reach the model as intended (a flip that forgets the boxes shows here).

GT boxes are drawn with Detectron2's ``Visualizer`` and the dataset's class names.
"""

import argparse
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2kd._deps import require_detectron2  # noqa: E402

require_detectron2()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog  # noqa: E402
from detectron2.data.catalog import Metadata  # noqa: E402
from detectron2.data.detection_utils import convert_image_to_rgb  # noqa: E402

import d2kd.data  # noqa: E402,F401
from d2kd.config import load_config  # noqa: E402
from d2kd.losses.fgd import fgd_attention, fgd_masks  # noqa: E402
from d2kd.utils.checkpoint_io import read_checkpoint  # noqa: E402


def dataset_metadata(names) -> Metadata:
    """The metadata (class names, colours) of a recipe's dataset ``names`` (str or list)."""
    if isinstance(names, str):
        names = [names]
    names = list(names or [])
    return MetadataCatalog.get(names[0]) if names else Metadata()


def auto_scale(height: int, width: int, short_side: int = 256) -> float:
    """Upscaling that makes the short side ``short_side`` px, so Visualizer's labels (10 px at
    least) do not cover a small image."""
    return max(1.0, short_side / max(1, min(height, width)))


def draw_gt(
    image: torch.Tensor,
    instances,
    image_format: str,
    metadata,
    scale: Optional[float] = None,
    labels: bool = True,
) -> np.ndarray:
    """An RGB uint8 (H*scale, W*scale, 3) picture of a mapped image with its GT boxes and names.

    Args:
        image: (C, H, W) uint8 tensor as a mapper produces it, in ``image_format``.
        instances: Instances with ``gt_boxes`` and ``gt_classes`` (None: the image alone).
        scale: upscaling (None: :func:`auto_scale`).
        labels: write the class names (from ``metadata.thing_classes``) next to the boxes.
    """
    scale = auto_scale(*image.shape[-2:]) if scale is None else scale
    try:
        from detectron2.utils.visualizer import Visualizer
    except ImportError as e:  # detectron2's Visualizer imports cv2 at module level
        raise ImportError(
            f"[visualize] Detectron2's Visualizer needs OpenCV ({e}): "
            "pip install opencv-python-headless"
        ) from e
    rgb = convert_image_to_rgb(image.permute(1, 2, 0).numpy(), image_format)
    vis = Visualizer(rgb, metadata=metadata, scale=scale)
    if instances is not None and len(instances) > 0:
        classes = instances.gt_classes.tolist()
        names = metadata.get("thing_classes", None)
        names_of = [names[c] if names and 0 <= c < len(names) else str(c) for c in classes]
        colors = metadata.get("thing_colors", None)
        if colors and max(classes) < len(colors):  # the dataset's class colours
            colors = [np.array(colors[c]) / 255 for c in classes]
        else:
            colors = None
        out = vis.overlay_instances(
            boxes=instances.gt_boxes.tensor.numpy(),
            labels=names_of if labels else None,
            assigned_colors=colors,
        )
    else:
        out = vis.output
    return out.get_image()


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


def load_recipe_and_teacher(args):
    """The recipe (with overrides) and its Teacher, loaded from ``--weights`` when given."""
    cfg = load_config(args.config_file, args.opts, owner="visualize")
    teacher = instantiate(cfg.model.teacher)
    if args.weights:
        teacher.load(args.weights)
    else:
        print("[visualize] no --weights: the teacher is randomly initialised")
    return cfg, teacher


def fgd_figure(args) -> str:
    cfg, teacher = load_recipe_and_teacher(args)
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
    image_format = cfg.dataloader.test.mapper.get("image_format", "BGR")
    metadata = dataset_metadata(args.dataset or cfg.dataloader.test.dataset.names)
    for ax, labels in zip(axes[:, 0], (True, False)):
        ax.imshow(
            draw_gt(example["image"], example["instances"], image_format, metadata, None, labels)
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


def adversarial_figure(args) -> str:
    """IKD: a clean image, its adversarial copy against the teacher, the amplified perturbation."""
    from d2kd.data.adversarial import Attack

    cfg, teacher = load_recipe_and_teacher(args)
    attack = instantiate(cfg.ikd.attack) if "ikd" in cfg else Attack()
    example = load_example(cfg, args.dataset, args.index)
    adv = attack(teacher.model, [example], torch.Generator().manual_seed(args.index))[0]
    clean = example["image"]
    delta = adv.float() - clean.float()
    amp = 127.0 / max(float(attack.eps), 1.0)
    bgr = cfg.dataloader.test.mapper.get("image_format", "BGR") == "BGR"

    def rgb(x):
        x = x.permute(1, 2, 0).clamp(0, 255).byte().numpy()
        return x[:, :, ::-1] if bgr else x

    panels = [
        ("clean", rgb(clean)),
        (f"adversarial ({attack.method}, eps {attack.eps:g})", rgb(adv)),
        (f"perturbation x{amp:.0f} (max {delta.abs().max():.0f})", rgb(delta * amp + 128)),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    return args.output


def _generator_snapshots(args):
    """(iteration, uint8 RGB (N, 3, H, W)) pairs: the hook's dumps, else the checkpoints'."""
    import glob

    dumps = sorted(glob.glob(os.path.join(args.output_dir, "generator", "iter_*.pt")))
    if dumps:
        return [
            (int(d["iteration"]), d["images"])
            for d in (torch.load(p, weights_only=True) for p in dumps)
        ]
    if not args.config_file:
        raise FileNotFoundError(
            f"[visualize] no generator dumps in {args.output_dir}/generator; pass --config-file "
            "to render from the checkpoints instead"
        )
    from d2kd.engine.dfad import GeneratorStep, preserved_buffers

    cfg = load_config(args.config_file, args.opts, owner="visualize")
    nodes = [h for h in cfg.train.get("hooks", []) if h.get("_target_") is GeneratorStep]
    if not nodes:
        raise KeyError(f"[visualize] {args.config_file} has no GeneratorStep in train.hooks")
    generator = instantiate(nodes[0].generator)
    z = torch.randn(args.count, generator.nz, generator=torch.Generator().manual_seed(0))
    out = []
    for path in sorted(glob.glob(os.path.join(args.output_dir, "model_*.pth"))):
        ckpt = read_checkpoint(path)
        state = ckpt.get("trainer", {}).get("hooks", {}).get("GeneratorStep")
        if state is None:
            continue
        generator.load_state_dict(state["generator"])
        with torch.no_grad(), preserved_buffers(generator):
            images = generator.train()(z)
        out.append((int(ckpt.get("iteration", -1)) + 1, ((images + 1) * 127.5).byte()))
    if not out:
        raise FileNotFoundError(f"[visualize] no checkpoint with a generator in {args.output_dir}")
    return sorted(out, key=lambda t: t[0])


def generator_figure(args) -> str:
    """DFAD: a grid of generated images (columns) at intervals of training (rows)."""
    snaps = _generator_snapshots(args)
    if len(snaps) > args.rows > 1:  # evenly spaced, always keeping the first and the last
        idx = sorted({round(i * (len(snaps) - 1) / (args.rows - 1)) for i in range(args.rows)})
        snaps = [snaps[i] for i in idx]
    cols = min(args.count, min(len(images) for _, images in snaps))
    fig, axes = plt.subplots(
        len(snaps), cols, figsize=(1.2 * cols, 1.3 * len(snaps)), squeeze=False
    )
    for row, (iteration, images) in zip(axes, snaps):
        for j, ax in enumerate(row):
            ax.imshow(images[j].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"iter {iteration}", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    return args.output


def mapped_batches(cfg, num_batches: int) -> list:
    """The first ``num_batches`` batches of the recipe's train loader, as the model gets them."""
    loader = instantiate(cfg.dataloader.train)
    if hasattr(loader, "set_start_iter"):
        loader.set_start_iter(0)
    batches, it = [], iter(loader)
    for _ in range(num_batches):
        batches.append(next(it))
    return batches


def batch_panels(cfg, num_batches: int, scale: Optional[float] = None):
    """(title, RGB picture) per mapped training image, batch after batch."""
    train = cfg.dataloader.train
    image_format = train.get("mapper", {}).get("image_format", "BGR")
    metadata = dataset_metadata(train.get("dataset", {}).get("names"))
    panels = []
    for b, batch in enumerate(mapped_batches(cfg, num_batches)):
        for i, sample in enumerate(batch):
            instances = sample.get("instances")
            picture = draw_gt(sample["image"], instances, image_format, metadata, scale)
            name = os.path.basename(str(sample.get("file_name", "(generated)")))
            h, w = sample["image"].shape[-2:]
            count = 0 if instances is None else len(instances)
            panels.append((f"batch {b} #{i}: {name}\n{w}x{h}, {count} boxes", picture))
    return panels


def batches_figure(args) -> str:
    """The recipe's first mapped training batches with GT boxes and class names, one PNG."""
    cfg = load_config(args.config_file, args.opts, owner="visualize")
    if args.num_batches < 1:
        raise ValueError(f"[visualize] --num-batches must be >= 1, got {args.num_batches}")
    panels = batch_panels(cfg, args.num_batches, args.scale)
    cols = len(panels) // args.num_batches
    fig, axes = plt.subplots(
        args.num_batches, cols, figsize=(3.2 * cols, 3.4 * args.num_batches), squeeze=False
    )
    for ax, (title, picture) in zip(axes.ravel(), panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    plt.close(fig)
    return args.output


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, helptext, recipe in (
        ("fgd", fgd_figure, "teacher spatial attention and foreground masks per level", ""),
        ("adversarial", adversarial_figure, "IKD: clean, adversarial and amplified perturbation",
         "an IKD recipe (its ikd.attack)"),
    ):  # fmt: skip
        one = sub.add_parser(name, help=helptext)
        one.add_argument("--config-file", required=True, help=recipe or None)
        one.add_argument("--weights", default="", help="teacher checkpoint (default: random)")
        one.add_argument("--dataset", default="", help="dataset (default: the recipe's test set)")
        one.add_argument("--index", type=int, default=0)
        one.add_argument("--output", default=f"{name}.png")
        one.add_argument("opts", nargs="*", help="key=value config overrides")
        one.set_defaults(func=func)
    gen = sub.add_parser("generator", help="DFAD: generated images at intervals of training")
    gen.add_argument("--output-dir", required=True, help="a DFAD run's train.output_dir")
    gen.add_argument("--config-file", default="", help="the recipe (only to read checkpoints)")
    gen.add_argument("--rows", type=int, default=6, help="time points shown")
    gen.add_argument("--count", type=int, default=8, help="images per time point")
    gen.add_argument("--output", default="generator.png")
    gen.add_argument("opts", nargs="*", help="key=value config overrides")
    gen.set_defaults(func=generator_figure)
    bat = sub.add_parser("batches", help="mapped training batches with GT boxes and class names")
    bat.add_argument("--config-file", required=True, help="any recipe with dataloader.train")
    bat.add_argument("--num-batches", type=int, default=2, help="batches drawn (one row each)")
    bat.add_argument(
        "--scale", type=float, default=None, help="upscaling (default: short side 256 px)"
    )
    bat.add_argument("--output", default="batches.png")
    bat.add_argument("opts", nargs="*", help="key=value config overrides")
    bat.set_defaults(func=batches_figure)
    args = parser.parse_args()
    print(args.func(args))


if __name__ == "__main__":
    main()
