"""No entry point runs code from a checkpoint, whatever its format or where it lies.

A crafted pickle whose ``__reduce__`` would create a marker file is offered to train_net as an
init checkpoint inside the output folder, as a relative init checkpoint with --eval-only, as the
file ``last_checkpoint`` names under --resume, and as a teacher in Detectron2's ``.pkl`` format:
each is refused with a message that says why, and the marker never appears.
"""

import os
import pickle

import pytest
import torch
from detectron2.config import instantiate
from helpers import ROOT, TINY_DISTILL, TINY_PLAIN, load_cfg, run_train_net

from d2kd.utils.checkpoint_io import UnsafeCheckpointError, read_checkpoint


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def plain_state():
    torch.manual_seed(0)
    return instantiate(load_cfg(TINY_PLAIN).model).state_dict()


def _crafted_pth(path, marker, state):
    torch.save({"model": state, "extra": _Payload(str(marker))}, path)
    return path


def test_reader_refuses_both_formats_and_names_the_opt_out(tmp_path, plain_state):
    marker = tmp_path / "ran"
    pth = _crafted_pth(tmp_path / "a.pth", marker, plain_state)
    pkl = tmp_path / "a.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {}, "__author__": "x", "extra": _Payload(str(marker))}, f)
    for path in (pth, pkl):
        with pytest.raises(UnsafeCheckpointError, match="refused.*could run code.*--unsafe-load"):
            read_checkpoint(str(path))
    assert not marker.exists()


def test_a_model_zoo_pkl_of_numpy_arrays_still_loads(tmp_path, plain_state):
    pkl = tmp_path / "zoo.pkl"
    with open(pkl, "wb") as f:
        model = {k: v.numpy() for k, v in plain_state.items()}
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    data = read_checkpoint(str(pkl))
    assert set(data["model"]) == set(plain_state)


def test_unsafe_load_reads_a_trusted_legacy_file(tmp_path, plain_state):
    import argparse

    path = tmp_path / "legacy.pth"
    torch.save({"model": plain_state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(str(path))
    assert read_checkpoint(str(path), unsafe_load=True)["args"].lr == 0.1


def _refused(proc, marker):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "refused" in out and "could run code" in out, out[-3000:]
    assert not marker.exists(), "code ran while loading a checkpoint"


def test_init_checkpoint_inside_the_output_folder(tmp_path, plain_state):
    out, marker = tmp_path / "run", tmp_path / "ran"
    out.mkdir()
    _crafted_pth(out / "init.pth", marker, plain_state)
    proc = run_train_net(
        ["--config-file", TINY_PLAIN, f"train.output_dir={out}", f"train.init_checkpoint={out}/init.pth"]
    )
    _refused(proc, marker)


def test_relative_init_checkpoint_with_eval_only(tmp_path, plain_state):
    marker = tmp_path / "ran"
    rel = os.path.relpath(_crafted_pth(tmp_path / "init.pth", marker, plain_state), ROOT)
    proc = run_train_net(
        [
            "--config-file",
            TINY_PLAIN,
            "--eval-only",
            f"train.output_dir={tmp_path / 'eval'}",
            f"train.init_checkpoint={rel}",
        ]
    )
    _refused(proc, marker)


def test_resume_from_the_file_last_checkpoint_names(tmp_path, plain_state):
    out, marker = tmp_path / "run", tmp_path / "ran"
    out.mkdir()
    _crafted_pth(out / "model_0000009.pth", marker, plain_state)
    (out / "last_checkpoint").write_text("model_0000009.pth")
    proc = run_train_net(["--config-file", TINY_PLAIN, "--resume", f"train.output_dir={out}"])
    _refused(proc, marker)


def test_teacher_in_detectron2_pkl_format(tmp_path, plain_state):
    marker, pkl = tmp_path / "ran", tmp_path / "teacher.pkl"
    with open(pkl, "wb") as f:
        model = {k: v.numpy() for k, v in plain_state.items()}
        pickle.dump({"model": model, "__author__": "x", "extra": _Payload(str(marker))}, f)
    proc = run_train_net(
        [
            "--config-file",
            TINY_DISTILL,
            f"train.output_dir={tmp_path / 'run'}",
            f"model.teacher.weights={pkl}",
        ]
    )
    _refused(proc, marker)
