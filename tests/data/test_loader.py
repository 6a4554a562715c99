"""The resumable training loader: any start iteration continues the same stream exactly."""

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from d2kd.data.loader import ResumableBatchStream, SampleReadError, build_resumable_train_loader


def noisy_mapper(d):
    """A mapper whose output depends on the host RNGs, like random augmentations."""
    return (d["id"], float(np.random.rand()), int(torch.randint(0, 1000, (1,))) >= 0)


DATA = [{"id": i} for i in range(10)]


def batches(start=0, workers=0, n=6, bs=3):
    loader = build_resumable_train_loader(
        DATA, mapper=noisy_mapper, total_batch_size=bs, num_workers=workers, seed=5
    )
    loader.set_start_iter(start)
    return [tuple(x[:2] for x in b) for b in itertools.islice(iter(loader), n)]


def test_resume_continues_the_same_stream_with_the_same_augmentation():
    full = batches(0, n=8)
    assert batches(5, n=3) == full[5:8]


def test_workers_do_not_change_the_stream():
    assert batches(0, workers=2, n=5) == batches(0, workers=0, n=5)
    assert batches(3, workers=2, n=3) == batches(0, n=6)[3:6]


def test_every_sample_once_per_epoch_and_epochs_differ():
    stream = ResumableBatchStream(DATA, None, batch_size=5, seed=1)
    epoch0 = [stream.index_at(p) for p in range(10)]
    epoch1 = [stream.index_at(p) for p in range(10, 20)]
    assert sorted(epoch0) == list(range(10)) == sorted(epoch1) and epoch0 != epoch1


def test_ranks_take_disjoint_slices():
    r0 = ResumableBatchStream(DATA, None, batch_size=2, seed=0, rank=0, world_size=2)
    r1 = ResumableBatchStream(DATA, None, batch_size=2, seed=0, rank=1, world_size=2)
    seen = r0.batch_positions(0) + r1.batch_positions(0) + r0.batch_positions(1)
    assert seen == [0, 1, 2, 3, 4, 5]


def test_host_rng_state_is_restored():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    next(iter(build_resumable_train_loader(DATA, mapper=noisy_mapper, total_batch_size=2)))
    assert np.random.rand() == expected


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_names_the_file_and_the_dataset(tmp_path, workers):
    """PIL says only "image file is truncated"; the loader adds which file of which dataset."""
    from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    images = []
    for i in range(2):
        name = f"{i:03d}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / name)
        images.append({"id": i + 1, "file_name": name, "width": 16, "height": 16})
    data = (tmp_path / "001.png").read_bytes()
    (tmp_path / "001.png").write_bytes(data[: len(data) // 2])
    coco = {
        "images": images,
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64}
            for i in range(2)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    name = f"t_truncated_{workers}"
    register_coco_instances(name, {}, str(tmp_path / "ann.json"), str(tmp_path))
    try:
        loader = build_resumable_train_loader(
            DatasetCatalog.get(name),
            mapper=DatasetMapper(is_train=True, augmentations=[], image_format="BGR"),
            total_batch_size=2,
            num_workers=workers,
            shuffle=False,
        )
        with pytest.raises(SampleReadError) as info:
            next(iter(loader))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    text = str(info.value)
    assert str(tmp_path / "001.png") in text and f"dataset '{name}'" in text, text
    assert "image file is truncated" in text, text


def test_a_sample_is_named_by_the_innermost_dataset_folder(tmp_path):
    """Detectron2's LVIS splits register all of coco/ as their images; an error in a
    coco/train2017 image names the COCO split alone, not every LVIS split besides it."""
    from detectron2.data import MetadataCatalog

    from d2kd.data.loader import datasets_holding

    names = {"t_outer": tmp_path, "t_inner": tmp_path / "train", "t_inner_too": tmp_path / "train"}
    for name, root in names.items():
        MetadataCatalog.get(name).set(image_root=str(root))
    try:
        assert datasets_holding(str(tmp_path / "train" / "x.jpg")) == ["t_inner", "t_inner_too"]
        assert datasets_holding(str(tmp_path / "val" / "x.jpg")) == ["t_outer"]
        assert datasets_holding(str(tmp_path.parent / "x.jpg")) == []
    finally:
        for name in names:
            MetadataCatalog.remove(name)
