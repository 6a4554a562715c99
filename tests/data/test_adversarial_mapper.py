"""IKD's paired mapper: aligned pairs, sample-specific augmentations, window by iteration."""

import json
import os

import detectron2.data.transforms as T
import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from PIL import Image

from d2kd.data.adversarial_mapper import (
    MANIFEST_NAME,
    AdaptiveRelativeCrop,
    AdversarialPairMapper,
    adversarial_path,
    build_adversarial_train_loader,
)
from d2kd.data.loader import _seeded_host_rngs
from d2kd.distill.schedule import Window


@pytest.fixture(scope="module")
def inverted_dir(tmp_path_factory):
    """A fake adversarial folder whose copies are the inverted clean images (255 - x)."""
    folder = str(tmp_path_factory.mktemp("adv"))
    dicts = DatasetCatalog.get("synth_tiny_train")
    for d in dicts:
        img = utils.read_image(d["file_name"], format="RGB")
        Image.fromarray(255 - img).save(adversarial_path(folder, d["file_name"], "png"))
    with open(os.path.join(folder, MANIFEST_NAME), "w") as f:
        json.dump({"complete": True, "format": "png", "settings": {"eps": 8}}, f)
    return folder, dicts


def _map(mapper, d, seed=0):
    with _seeded_host_rngs(seed):
        return mapper(dict(d))


@pytest.mark.parametrize("resize", [False, True])
def test_pairs_are_pixel_aligned(inverted_dir, resize):
    folder, dicts = inverted_dir
    augs = [AdaptiveRelativeCrop((0.5, 0.5)), T.RandomFlip(horizontal=True)]
    if resize:
        augs.insert(0, T.ResizeShortestEdge(short_edge_length=96, max_size=96))
    mapper = AdversarialPairMapper(augs, adv_dir=folder, noise_prob=0.0, small_size=0)
    cropped = 0
    for seed, d in enumerate(dicts[:6]):
        out = _map(mapper, d, seed)
        img, adv = out["image"].int(), out["adv_image"].int()
        assert img.shape == adv.shape
        err = (255 - adv - img).abs().float()
        # Bilinear resampling rounds each image on its own: a pixel of error at most 2, rarely;
        # a one-pixel shift would give errors of tens at every edge.
        assert err.max() <= (2 if resize else 0) and err.mean() < 0.5, (err.max(), err.mean())
        shifted = (255 - adv[..., 1:] - img[..., :-1]).abs().float().mean()
        assert shifted > 4 * err.mean() + 1, (shifted, err.mean())
        cropped += img.shape[-1] < (96 if resize else d["width"])
        boxes = out["instances"].gt_boxes.tensor
        assert (boxes[:, 2] <= img.shape[-1] + 1e-3).all()
    assert cropped > 0, "the adaptive crop never cropped"


def test_coco_polygons_are_dropped_not_cropped(inverted_dir):
    """COCO annotations carry polygons; the pair mapper keeps boxes only, as Detectron2's
    DatasetMapper without masks does (cropping polygons needs shapely, and no box detector uses
    the masks). It broke IKD's COCO recipe on its first real-size step."""
    folder, dicts = inverted_dir
    d = dict(dicts[0])
    d["annotations"] = [
        dict(a, segmentation=[[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]], keypoints=[])
        for a in d["annotations"]
        for x0, y0, w, h in [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYWH_ABS)]
    ]
    mapper = AdversarialPairMapper(
        [AdaptiveRelativeCrop((0.5, 0.5))], adv_dir=folder, noise_prob=0.0, small_size=0
    )
    instances = _map(mapper, d)["instances"]
    assert len(instances) and instances.get_fields().keys() == {"gt_boxes", "gt_classes"}
    assert all("segmentation" in a for a in d["annotations"]), "the dataset dict is not edited"


def test_all_small_images_get_noise_and_no_crop(inverted_dir):
    folder, dicts = inverted_dir
    d = dicts[0]
    # Every box is "small" under a 10^4 px threshold: noise always (p=1), crop never.
    mapper = AdversarialPairMapper(
        [AdaptiveRelativeCrop((0.5, 0.5))], adv_dir=folder, noise_prob=1.0, small_size=1e4
    )
    out = _map(mapper, d)
    clean = utils.read_image(d["file_name"], format="BGR").transpose(2, 0, 1)
    assert tuple(out["image"].shape[-2:]) == (d["height"], d["width"])
    assert (out["image"].numpy() != clean).mean() > 0.5
    assert np.array_equal(out["adv_image"].numpy(), 255 - clean), "adv is never corrupted"
    online = AdversarialPairMapper([], noise_prob=1.0, small_size=1e4)
    out = _map(online, d)
    assert np.array_equal(out["attack_image"].numpy(), clean)


def test_window_follows_the_iteration_of_each_batch(inverted_dir):
    folder, dicts = inverted_dir
    mapper = AdversarialPairMapper([T.RandomFlip()], adv_dir=folder, window=Window(start=1, end=3))
    loader = build_adversarial_train_loader(dicts, mapper=mapper, total_batch_size=2)
    loader.set_start_iter(0)
    it = iter(loader)
    has_adv = ["adv_image" in next(it)[0] for _ in range(4)]
    assert has_adv == [False, True, True, False]
    loader.set_start_iter(2)  # as after --resume at iteration 2
    assert ["adv_image" in next(iter(loader))[0]] == [True]


def test_missing_or_mismatched_folder_names_the_command(tmp_path, inverted_dir):
    with pytest.raises(FileNotFoundError, match="python tools/gen_adversarial.py --x"):
        AdversarialPairMapper(
            [], adv_dir=str(tmp_path), adv_command="python tools/gen_adversarial.py --x"
        )
    folder, _ = inverted_dir
    with pytest.raises(ValueError, match="'eps' is 8"):
        AdversarialPairMapper([], adv_dir=folder, expected_settings={"eps": 4})
