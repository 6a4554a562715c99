"""IKD's training data: clean/adversarial image pairs and the sample-specific augmentations.

:class:`AdversarialPairMapper` reads a dataset dict like Detectron2's ``DatasetMapper`` and, while
IKD's window is active,

* loads the image's adversarial copy from ``adv_dir`` (written by ``tools/gen_adversarial.py``)
  and applies the *same sampled* transforms to it, so the pair is pixel-aligned. The official
  mmdet pipeline is not aligned: its ``RandomCrop`` draws a separate offset per image field;
* replaces, with probability ``noise_prob`` (0.3), an image whose GT boxes are all small
  (area < ``small_size``^2 in original pixels; an image without boxes counts) by an ImageNet-C
  Gaussian-noise copy (severity 1: sigma 0.08 of the range), before any geometric transform.
  The adversarial image is never corrupted; in online mode the uncorrupted image goes to
  ``"attack_image"`` so the attack starts from the clean image as offline;
* enables :class:`AdaptiveRelativeCrop` (mmdet ``RandomCrop`` ``relative_range`` 0.8, adaptive),
  which skips images whose boxes are all small.

Outside the window it is a plain mapper (no pair, no sample-specific augmentation).

The switch is a function of the iteration, not of the training process's state: DataLoader
workers hold copies of the mapper that no hook can reach. :func:`build_adversarial_train_loader`
(the resumable loader, d2kd/data/loader.py) tells the mapper the batch index (= the iteration)
of every sample it maps, in whichever worker; the window itself (the ``AdversarialAugmentation``
hook's ``Window``, the same object the KD term holds) is handed over by the hook before the
workers start, or given here.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode

from ..utils.files import read_json, sha256_file
from .loader import ResumableBatchStream, ResumableTrainLoader, build_resumable_train_loader

__all__ = [
    "AdaptiveRelativeCrop",
    "AdversarialPairMapper",
    "IterationAwareBatchStream",
    "MANIFEST_NAME",
    "adversarial_path",
    "build_adversarial_train_loader",
    "gaussian_noise",
    "teacher_sha256",
]

MANIFEST_NAME = "manifest.json"


def adversarial_path(adv_dir: str, file_name: str, fmt: str) -> str:
    """Where the adversarial copy of ``file_name`` lives: ``<adv_dir>/<stem>.<fmt>``."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return os.path.join(adv_dir, f"{stem}.{fmt}")


def teacher_sha256(path: str) -> str:
    """SHA-256 of a teacher checkpoint (local path or Detectron2 URL), for manifests."""
    if "://" in path:
        from detectron2.utils.file_io import PathManager

        path = PathManager.get_local_path(path)
    return sha256_file(path)


def gaussian_noise(image: np.ndarray, sigma: float = 0.08) -> np.ndarray:
    """ImageNet-C ``gaussian_noise`` (severity 1: sigma 0.08): ``clip(x/255 + N(0, s^2)) * 255``.

    Args:
        image: (H, W, C) uint8; noise from NumPy's global RNG (seeded per sample by the loader).
    """
    noisy = np.clip(image / 255.0 + np.random.normal(size=image.shape, scale=sigma), 0, 1)
    return (noisy * 255).astype(np.uint8)


class PairAugInput(T.AugInput):
    """AugInput that also carries whether every GT box is small (for the adaptive crop)."""

    def __init__(self, image: np.ndarray, *, boxes=None, all_small: bool = False):
        super().__init__(image, boxes=boxes)
        self.all_small = all_small


class AdaptiveRelativeCrop(T.Augmentation):
    """mmdet's ``RandomCrop(crop_type="relative_range", adaptive=True)`` as IKD configures it.

    Height and width fractions uniform in ``[crop_size, 1]``, uniform offset; no crop when every
    box is small. mmdet resamples the image when no box survives; a mapper cannot, so this tries
    ``max_tries`` crops and keeps the image whole when none keeps a box.
    """

    input_args = ("image", "boxes", "all_small")

    def __init__(self, crop_size: Tuple[float, float] = (0.8, 0.8), max_tries: int = 10):
        super().__init__()
        self.crop_size = tuple(crop_size)
        self.max_tries = max_tries

    def get_transform(self, image, boxes, all_small):
        h, w = image.shape[:2]
        if all_small:
            return T.NoOpTransform()
        lo = np.asarray(self.crop_size, dtype=np.float64)
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes)
        for _ in range(self.max_tries):
            fh, fw = lo + np.random.rand(2) * (1 - lo)
            ch, cw = max(1, int(h * fh)), max(1, int(w * fw))
            y0 = np.random.randint(0, h - ch + 1)
            x0 = np.random.randint(0, w - cw + 1)
            x1 = np.clip(boxes[:, [0, 2]], x0, x0 + cw)
            y1 = np.clip(boxes[:, [1, 3]], y0, y0 + ch)
            keeps = (x1[:, 1] > x1[:, 0]) & (y1[:, 1] > y1[:, 0])
            if len(boxes) == 0 or keeps.any():
                return T.CropTransform(x0, y0, cw, ch)
        return T.NoOpTransform()


SAMPLE_SPECIFIC = (AdaptiveRelativeCrop,)


class AdversarialPairMapper:
    """Map a dataset dict to a training input with IKD's pair and augmentations (see module doc).

    Args:
        augmentations: Detectron2 augmentations for both images; :class:`AdaptiveRelativeCrop`
            entries run only inside the window (put it after the resize, as the official).
        image_format: image format of the models (e.g. "BGR").
        adv_dir: folder of adversarial copies with a complete manifest (offline mode); None
            for online mode (the attack runs in the KD term).
        adv_command: the command that makes ``adv_dir``, quoted by the error when it is missing.
        expected_settings: manifest entries that must match (e.g. the attack's settings).
        teacher_weights: the recipe's teacher checkpoint; its SHA-256 must be the manifest's
            (the copies are adversarial for one teacher only). Empty: not checked.
        window: a function of the iteration, on where non-zero (a ``d2kd.distill.schedule.
            Window``); None: always on. Normally the ``AdversarialAugmentation`` hook hands its
            own through :meth:`set_window`.
        noise_prob: probability of the Gaussian-noise substitution for all-small images (0.3).
        small_size: a box is small when its area is below ``small_size ** 2`` (32).
    """

    def __init__(
        self,
        augmentations: Sequence[T.Augmentation],
        image_format: str = "BGR",
        adv_dir: Optional[str] = None,
        adv_command: str = "python tools/gen_adversarial.py ...",
        expected_settings: Optional[Dict[str, Any]] = None,
        teacher_weights: str = "",
        window: Optional[Callable[[int], float]] = None,
        noise_prob: float = 0.3,
        small_size: float = 32.0,
    ):
        self.augmentations = list(augmentations)
        self.plain_augmentations = [
            a for a in self.augmentations if not isinstance(a, SAMPLE_SPECIFIC)
        ]
        self.image_format = image_format
        self.adv_dir = adv_dir
        self.noise_prob = noise_prob
        self.small_area = small_size**2
        self.window = window
        self.iteration: Optional[int] = None
        self.adv_format = None
        if adv_dir is not None:
            expected = dict(expected_settings or {})
            if teacher_weights:
                expected["teacher_sha256"] = teacher_sha256(teacher_weights)
            self.adv_format = self._check_manifest(adv_dir, adv_command, expected)

    @staticmethod
    def _check_manifest(adv_dir: str, command: str, expected: Dict[str, Any]) -> str:
        path = os.path.join(adv_dir, MANIFEST_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"[AdversarialPairMapper] no adversarial images in {adv_dir} ({MANIFEST_NAME} "
                f"missing). Make them first with:\n  {command}"
            )
        manifest = read_json(path)
        if not manifest.get("complete", False):
            raise RuntimeError(
                f"[AdversarialPairMapper] {path} is incomplete (generation interrupted?): rerun "
                f"it, it resumes where it stopped:\n  {command}"
            )
        for key, want in expected.items():
            got = manifest.get("settings", {}).get(key, manifest.get(key))
            if got != want:
                raise ValueError(
                    f"[AdversarialPairMapper] {path}: '{key}' is {got!r}, the recipe expects "
                    f"{want!r}; regenerate with:\n  {command}"
                )
        return manifest["format"]

    def set_window(self, window: Callable[[int], float]) -> None:
        """Use ``window`` (kept by reference: the hook's and the term's object) from now on."""
        self.window = window

    def is_active(self) -> bool:
        """Inside the window at the current sample's iteration (no iteration known: active)."""
        if self.iteration is None or self.window is None:
            return True
        return self.window(self.iteration) != 0

    def _all_small(self, annos: List[Dict[str, Any]]) -> bool:
        if not annos:
            return True
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
            dtype=np.float64,
        )
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return bool((area < self.small_area).all())

    def _read_adversarial(self, d: Dict[str, Any], shape) -> np.ndarray:
        path = adversarial_path(self.adv_dir, d["file_name"], self.adv_format)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"[AdversarialPairMapper] adversarial copy of {d['file_name']} missing: {path}"
            )
        try:
            adv = utils.read_image(path, format=self.image_format)
        except OSError as e:
            raise OSError(
                f"[AdversarialPairMapper] cannot read the adversarial copy {path} of "
                f"{d['file_name']}: {e}; delete it and rerun the generator (it redoes missing "
                "files)"
            ) from e
        if adv.shape != shape:
            raise ValueError(
                f"[AdversarialPairMapper] {path} is {adv.shape}, its clean image {shape}"
            )
        return adv

    @staticmethod
    def _to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = dict(dataset_dict)
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        # Boxes only, as Detectron2's DatasetMapper without masks or keypoints: COCO's polygons
        # would otherwise be cropped (which needs shapely) and become masks no detector here uses.
        annos = [
            {k: v for k, v in a.items() if k not in ("segmentation", "keypoints")}
            for a in d.pop("annotations", [])
            if a.get("iscrowd", 0) == 0
        ]
        active = self.is_active()
        adv = self._read_adversarial(d, image.shape) if active and self.adv_dir else None
        all_small = self._all_small(annos)
        clean = None
        if active and all_small and np.random.rand() < self.noise_prob:
            clean, image = image, gaussian_noise(image)
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        ).reshape(-1, 4)
        aug_input = PairAugInput(image, boxes=boxes, all_small=all_small)
        augs = self.augmentations if active else self.plain_augmentations
        transforms = T.AugmentationList(augs)(aug_input)
        image = aug_input.image
        d["image"] = self._to_tensor(image)
        if adv is not None:
            d["adv_image"] = self._to_tensor(transforms.apply_image(adv))
        if clean is not None and self.adv_dir is None:
            d["attack_image"] = self._to_tensor(transforms.apply_image(clean))
        annos = [
            utils.transform_instance_annotations(a, transforms, image.shape[:2]) for a in annos
        ]
        instances = utils.annotations_to_instances(annos, image.shape[:2])
        d["instances"] = utils.filter_empty_instances(instances)
        return d


class IterationAwareBatchStream(ResumableBatchStream):
    """The resumable stream, telling the mapper the iteration of each batch it maps.

    Batch ``k`` is consumed at trainer iteration ``k`` (``set_start_iter`` keeps that true after
    ``--resume``), so a mapper with an ``iteration`` attribute can decide from it, in any worker.
    """

    def make_batch(self, batch: int) -> List[Any]:
        if hasattr(self.mapper, "iteration"):
            self.mapper.iteration = batch
        return super().make_batch(batch)


def build_adversarial_train_loader(
    dataset: Sequence[Dict[str, Any]],
    *,
    mapper: AdversarialPairMapper,
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
) -> ResumableTrainLoader:
    """``build_resumable_train_loader`` with an :class:`IterationAwareBatchStream`."""
    return build_resumable_train_loader(
        dataset,
        mapper=mapper,
        total_batch_size=total_batch_size,
        num_workers=num_workers,
        seed=seed,
        shuffle=shuffle,
        stream_cls=IterationAwareBatchStream,
    )
