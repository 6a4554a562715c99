# The embedded synthetic dataset (d2kd/data/synthetic/): 128 px images, rendered on first use.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from d2kd.data.loader import build_resumable_train_loader

dataloader = OmegaConf.create()
dataloader.train = L(build_resumable_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[L(T.RandomFlip)(horizontal=True)],
        image_format="BGR",
    ),
    total_batch_size=8,  # the batch measured in shared/measurements.md for CPU step times
    num_workers=0,
    seed="${train.seed}",
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_val", filter_empty=False),
    mapper=L(DatasetMapper)(is_train=False, augmentations=[], image_format="BGR"),
    num_workers=0,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}", tasks=("bbox",), output_dir=None
)
