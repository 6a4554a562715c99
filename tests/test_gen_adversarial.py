"""tools/gen_adversarial.py: restartable (finished images are not redone), manifest guards."""

import json
import os
import sys

import pytest
import torch
from detectron2.config import instantiate
from helpers import ROOT, load_cfg

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_adversarial  # noqa: E402

TINY_IKD_OFFLINE = os.path.join(ROOT, "tests", "configs", "tiny_ikd_offline.py")


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    teacher = instantiate(load_cfg(TINY_IKD_OFFLINE).model.teacher.model)
    path = str(tmp_path_factory.mktemp("gen_teacher") / "teacher.pth")
    torch.save({"model": teacher.state_dict()}, path)
    return path


def _run(out, teacher, *extra):
    args = gen_adversarial.parser().parse_args(
        [
            "--config-file",
            TINY_IKD_OFFLINE,
            "--weights",
            teacher,
            "--output-dir",
            str(out),
            "--steps",
            "1",
            "--device",
            "cpu",
            *extra,
        ]
    )
    args.steps = int(args.steps)
    gen_adversarial.work(args)
    with open(out / "manifest.json") as f:
        return json.load(f)


def test_restart_skips_finished_images_and_manifest_refuses_mixing(tmp_path, teacher_ckpt):
    out = tmp_path / "adv"
    manifest = _run(out, teacher_ckpt, "--limit", "3")
    first = {p: os.path.getmtime(out / p) for p in os.listdir(out) if p.endswith(".png")}
    assert len(first) == 3 and not manifest["complete"]
    assert manifest["settings"]["method"] == "difgsm" and manifest["settings"]["steps"] == 1
    manifest = _run(out, teacher_ckpt)
    pngs = [p for p in os.listdir(out) if p.endswith(".png")]
    assert manifest["complete"] and manifest["images"] == len(pngs) == 16
    assert all(os.path.getmtime(out / p) == t for p, t in first.items()), "redid finished images"
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    with pytest.raises(SystemExit, match="eps=8.0, this run has eps=4.0"):
        _run(out, teacher_ckpt, "--eps", "4")

    # The paired mapper accepts the folder for this teacher and these settings only.
    from d2kd.data.adversarial_mapper import AdversarialPairMapper

    AdversarialPairMapper(
        [],
        adv_dir=str(out),
        teacher_weights=teacher_ckpt,
        expected_settings={"method": "difgsm", "steps": 1},
    )
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    with pytest.raises(ValueError, match="teacher_sha256"):
        AdversarialPairMapper([], adv_dir=str(out), teacher_weights=str(other))
