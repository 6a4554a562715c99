"""Teacher loading: strict key report, clear errors for every bad file, frozen parameters."""

import pytest
import torch
from detectron2.config import instantiate
from helpers import load_cfg
from torch import nn

from d2kd.distill import Teacher, TeacherLoadError


@pytest.fixture(scope="module")
def teacher_node():
    return load_cfg().model.teacher.model


@pytest.fixture()
def teacher(teacher_node):
    return Teacher(instantiate(teacher_node))


def test_loads_its_own_weights_and_reports(teacher, teacher_node, tmp_path):
    src = instantiate(teacher_node)
    path = tmp_path / "t.pth"
    torch.save({"model": src.state_dict(), "d2kd": {"format": 1}}, path)
    report = teacher.load(str(path))
    assert report.loaded == len(src.state_dict()) and not report.missing and not report.unexpected
    for (k, a), b in zip(src.state_dict().items(), teacher.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_frozen_and_always_eval(teacher):
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training


def test_missing_file(teacher, tmp_path):
    with pytest.raises(TeacherLoadError, match=r"not found: .*nope\.pth"):
        teacher.load(str(tmp_path / "nope.pth"))


def test_no_weights_configured(teacher):
    with pytest.raises(TeacherLoadError, match=r"model\.teacher\.weights"):
        teacher.load()


def test_corrupt_file(teacher, tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(TeacherLoadError, match=r"could not read .*bad\.pth: not a torch checkpoint"):
        teacher.load(str(path))


def test_mismatched_keys_are_listed(teacher, tmp_path):
    state = dict(teacher.model.state_dict())
    state.pop("head.cls_score.weight")
    state["head.extra.weight"] = torch.zeros(1)
    state["head.bbox_pred.bias"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save({"model": state}, path)
    with pytest.raises(TeacherLoadError) as err:
        teacher.load(str(path))
    msg = str(err.value)
    assert "other.pth" in msg and "head.cls_score.weight" in msg and "head.extra.weight" in msg
    assert "shape of 'head.bbox_pred.bias'" in msg


def test_allowed_keys_pass(teacher_node, tmp_path):
    teacher = Teacher(
        instantiate(teacher_node), allow_missing=["head.cls_score.*"], allow_unexpected=["extra"]
    )
    state = dict(teacher.model.state_dict())
    del state["head.cls_score.weight"], state["head.cls_score.bias"]
    state["extra"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "ok.pth")
    report = teacher.load(str(tmp_path / "ok.pth"))
    assert report.missing == ["head.cls_score.weight", "head.cls_score.bias"]
    assert report.unexpected == ["extra"]


def test_pickled_objects_are_refused(teacher, tmp_path):
    # weights_only=True: a checkpoint that needs arbitrary unpickling is an error, not executed.
    path = tmp_path / "obj.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "obj": nn.Linear(1, 1)}, path)
    with pytest.raises(TeacherLoadError, match="refused .*obj.pth.*could run code.*--unsafe-load"):
        teacher.load(str(path))
