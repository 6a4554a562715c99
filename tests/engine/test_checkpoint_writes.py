"""Checkpoint writes: atomic, 0644 like other outputs, and a full disk reported as such."""

import os

import pytest
import torch
from torch import nn

import d2kd.engine.checkpoint as ckpt_module
from d2kd.engine.checkpoint import DistillCheckpointer
from d2kd.utils.files import DiskFullError


def _full_disk_save(obj, f):
    """What torch.save does when the disk fills mid-write: a partial file, then its zip error."""
    f.write(b"partial bytes")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 64")


def test_a_full_disk_names_the_intact_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    ck = DistillCheckpointer(nn.Linear(2, 2), str(tmp_path))
    ck.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()
    monkeypatch.setattr(ckpt_module.torch, "save", _full_disk_save)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*model_final.pth; .* intact"):
        ck.save("model_final")
    with pytest.raises(DiskFullError, match=r"model_0000001.pth was not written"):
        ck.save("model_0000001")
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]


def test_checkpoints_get_the_mode_of_other_outputs(tmp_path):
    DistillCheckpointer(nn.Linear(2, 2), str(tmp_path)).save("model_final")
    (tmp_path / "other.json").write_text("{}")
    mode = os.stat(tmp_path / "model_final.pth").st_mode & 0o777
    assert mode == os.stat(tmp_path / "other.json").st_mode & 0o777
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["d2kd"]["format"] == 1
