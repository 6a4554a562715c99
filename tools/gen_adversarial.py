#!/usr/bin/env python
"""Make IKD's offline adversarial copies of a training set, attacking a teacher.

    python tools/gen_adversarial.py \
        --config-file configs/ikd/retinanet_R18_from_R18w_synth_offline.py \
        model.teacher.weights=$(python tools/quickstart.py --teacher-path)

The config is an IKD recipe (teacher, dataset, output folder and attack are read from it: its
``model.teacher``, ``dataloader.train.dataset.names``, ``dataloader.train.mapper.adv_dir`` and
``ikd.attack``) or a plain detector recipe with ``--weights``, ``--dataset`` and ``--output-dir``.
Flags override the recipe. As in the official ``tools/ta_GT.py``, each image is attacked at the
recipe's test scale (``dataloader.test.mapper.augmentations``), then resized back to its original
size and written as ``<output-dir>/<stem>.png`` (``--format jpg`` reproduces the official JPEG).

Sharded over ``--num-gpus`` processes with Detectron2's launcher (gloo on CPU). Restartable:
images already written are skipped, files are renamed into place when complete. A
``manifest.json`` ties the folder to the teacher checkpoint's SHA-256, the dataset and the attack
settings; a folder made with other settings is refused, naming the setting.
"""

import argparse
import os
import sys
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.data import detection_utils as utils  # noqa: E402
from detectron2.data import get_detection_dataset_dicts  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.engine import launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from PIL import Image  # noqa: E402

import d2kd.data  # noqa: E402,F401  (registers the synthetic datasets)
from d2kd.config import load_config  # noqa: E402
from d2kd.data.adversarial import Attack  # noqa: E402
from d2kd.data.adversarial_mapper import (  # noqa: E402
    MANIFEST_NAME,
    adversarial_path,
    teacher_sha256,
)
from d2kd.distill.teacher import Teacher  # noqa: E402
from d2kd.utils.files import (  # noqa: E402
    atomic_write,
    read_json,
    remove_stale_temporaries,
    write_json,
)

MANIFEST_VERSION = 1
ATTACK_FLAGS = ("method", "eps", "step", "steps", "decay", "diversity_prob", "resize_rate")


def resolve(args) -> Dict[str, Any]:
    """Teacher node, weights, dataset, folder, attack and test augmentations from recipe + flags."""
    cfg = load_config(
        args.config_file, list(args.opts), required=("model",), owner="gen_adversarial"
    )
    node = cfg.model
    weights = args.weights
    if "teacher" in node and "student" in node:  # a Distiller recipe
        weights = weights or node.teacher.get("weights", "")
        node = node.teacher.model
    train = cfg.get("dataloader", {}).get("train", {})
    dataset = args.dataset or train.get("dataset", {}).get("names")
    out = args.output_dir or train.get("mapper", {}).get("adv_dir")
    ikd = cfg.get("ikd", {})
    attack = instantiate(ikd.attack) if "attack" in ikd else Attack()
    for flag in ATTACK_FLAGS:
        if getattr(args, flag) is not None:
            setattr(attack, flag, type(getattr(attack, flag))(getattr(args, flag)))
    if args.official_diversity:
        attack.diversity_boxes = False
    if args.official_budget:
        attack.official_budget = True
    attack.__post_init__()
    test = cfg.get("dataloader", {}).get("test", {}).get("mapper", {})
    augs = [instantiate(a) for a in test.get("augmentations", [])]
    for name, value in (("teacher weights", weights), ("dataset", dataset), ("output dir", out)):
        if not value:
            raise SystemExit(f"[gen_adversarial] no {name}: give it as a flag or in the recipe")
    return dict(node=node, weights=weights, dataset=dataset, out=out, attack=attack, augs=augs)


def manifest_for(job: Dict[str, Any], args) -> Dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "teacher_sha256": teacher_sha256(job["weights"]),
        "dataset": job["dataset"],
        "format": args.format,
        "seed": args.seed,
        "test_augmentations": [repr(a) for a in job["augs"]],
        "settings": job["attack"].settings(),
    }


def check_or_write_manifest(folder: str, manifest: Dict[str, Any]) -> None:
    """Write a new (incomplete) manifest, or refuse when the folder's differs."""
    path = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(path):
        old = read_json(path)
        flat_old = {**{k: v for k, v in old.items() if k != "settings"}, **old.get("settings", {})}
        flat_new = {
            **{k: v for k, v in manifest.items() if k != "settings"},
            **manifest["settings"],
        }
        for key in sorted(set(flat_old) | set(flat_new)):
            if key in ("complete", "images", "teacher_weights"):
                continue
            if flat_old.get(key) != flat_new.get(key):
                raise SystemExit(
                    f"[gen_adversarial] {folder} was made with {key}={flat_old.get(key)!r}, this "
                    f"run has {key}={flat_new.get(key)!r}: use another --output-dir (or delete "
                    "the folder) rather than mixing images"
                )
        return
    write_json({**manifest, "complete": False}, path)


def save_image(rgb: np.ndarray, path: str, fmt: str) -> None:
    """Write an image atomically: a killed run never leaves a truncated copy to be skipped."""
    img = Image.fromarray(rgb)
    if fmt == "jpg":  # mmcv.imwrite's default quality
        atomic_write(path, lambda f: img.save(f, format="JPEG", quality=95))
    else:
        atomic_write(path, lambda f: img.save(f, format="PNG"))


def load_item(d: Dict[str, Any], augs: List[T.Augmentation], image_format: str) -> Dict[str, Any]:
    """The image at test scale with its GT instances (the official attacks at test scale)."""
    image = utils.read_image(d["file_name"], format=image_format)
    annos = [a for a in d.get("annotations", []) if a.get("iscrowd", 0) == 0]
    aug_input = T.AugInput(image)
    transforms = T.AugmentationList(augs)(aug_input)
    image = aug_input.image
    annos = [utils.transform_instance_annotations(a, transforms, image.shape[:2]) for a in annos]
    return {
        "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "instances": utils.annotations_to_instances(annos, image.shape[:2]),
    }


def to_rgb_original(adv: torch.Tensor, hw, image_format: str) -> np.ndarray:
    arr = adv.permute(1, 2, 0).cpu().numpy()
    if image_format == "BGR":
        arr = arr[:, :, ::-1]
    arr = np.ascontiguousarray(arr)
    if arr.shape[:2] != tuple(hw):
        arr = np.asarray(Image.fromarray(arr).resize((hw[1], hw[0]), Image.BILINEAR))
    return arr


def progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm

        return tqdm(total=total, disable=not enabled, desc="adversarial", unit="img")
    except ImportError:  # pragma: no cover - tqdm ships with detectron2's dependencies
        return None


def work(args) -> None:
    job = resolve(args)
    folder = job["out"]
    dicts = get_detection_dataset_dicts(job["dataset"], filter_empty=False)
    stems = [os.path.splitext(os.path.basename(d["file_name"]))[0] for d in dicts]
    if len(set(stems)) != len(stems):
        raise SystemExit(f"[gen_adversarial] {job['dataset']}: image file names are not unique")
    manifest = manifest_for(job, args)
    if comm.is_main_process():
        check_or_write_manifest(folder, manifest)
        remove_stale_temporaries(folder)  # left by a killed run; no writer is active yet
    comm.synchronize()
    rank, world = comm.get_rank(), comm.get_world_size()
    teacher = Teacher(model=instantiate(job["node"]), weights=job["weights"])
    teacher.load()
    device = args.device
    if device == "cuda" and world > 1:
        device = f"cuda:{comm.get_local_rank()}"
    model = teacher.model.to(device).eval()
    todo = [
        i
        for i in range(rank, len(dicts), world)
        if not os.path.isfile(adversarial_path(folder, dicts[i]["file_name"], args.format))
    ][: args.limit]
    bar = progress(len(todo), comm.is_main_process())
    fmt_in = model.input_format
    for start in range(0, len(todo), args.batch_size):
        ids = todo[start : start + args.batch_size]
        items = [load_item(dicts[i], job["augs"], fmt_in) for i in ids]
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + ids[0])
        advs = job["attack"](model, items, gen)
        for i, item, adv in zip(ids, items, advs):
            rgb = to_rgb_original(adv, (dicts[i]["height"], dicts[i]["width"]), fmt_in)
            save_image(
                rgb, adversarial_path(folder, dicts[i]["file_name"], args.format), args.format
            )
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    comm.synchronize()
    if comm.is_main_process():
        done = sum(
            os.path.isfile(adversarial_path(folder, d["file_name"], args.format)) for d in dicts
        )
        complete = done == len(dicts)
        write_json(
            {**manifest, "teacher_weights": job["weights"], "images": done, "complete": complete},
            os.path.join(folder, MANIFEST_NAME),
        )
        print(
            f"[gen_adversarial] {done}/{len(dicts)} images in {folder}"
            + ("" if complete else " (incomplete)")
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, help="IKD recipe or plain teacher recipe")
    p.add_argument("--weights", default="", help="teacher checkpoint (default: the recipe's)")
    p.add_argument("--dataset", default="", help="dataset name (default: the recipe's train set)")
    p.add_argument("--output-dir", default="", help="folder (default: the recipe's mapper.adv_dir)")
    p.add_argument("--method", default=None, help="fgsm | pgd | mifgsm | difgsm")
    for flag in ATTACK_FLAGS[1:]:
        p.add_argument(f"--{flag.replace('_', '-')}", type=float, default=None)
    p.add_argument("--official-diversity", action="store_true", help="do not move boxes under DI")
    p.add_argument("--official-budget", action="store_true", help="eps from each image's range")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--batch-size", type=int, default=1, help="images per attack (official: 1)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs, or CPU with gloo)")
    p.add_argument("--dist-url", default="auto")
    p.add_argument("opts", nargs="*", help="key=value overrides of the recipe")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.steps is not None:
        args.steps = int(args.steps)
    launch(work, args.num_gpus, dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main()
