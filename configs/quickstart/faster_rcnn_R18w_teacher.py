# A two-stage teacher for the embedded synthetic dataset: Faster R-CNN R18 (256-ch FPN P2-P6,
# 2 x 1024 fc box head), trained from scratch. HEAD distils it into the quickstart RetinaNet
# student (a detector of another family); LSHFM's two-stage rows use it too. Trained once into
# the teacher cache (the folder of the path printed by
# `python tools/quickstart.py --teacher-path configs/quickstart/faster_rcnn_R18w_teacher.py`);
# benchmarks/accuracy_suite.py does this itself for the methods that need it.
from ..common.data.synthetic import dataloader
from ..common.optim import SGD as optimizer
from ..common.synth_schedule import synth_schedule
from ..common.train import train
from .models import faster_rcnn_teacher_model as model

# 1.5x the students' schedule (the RetinaNet teacher has 2.5x), to fit the CPU budget; its AP
# against the RetinaNet student is in projects/HEAD/README.md.
lr_multiplier = synth_schedule(train, 1500, "./output/quickstart/faster_rcnn_teacher")
