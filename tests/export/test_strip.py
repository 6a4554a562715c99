"""Stripping a d2kd checkpoint down to a stock Detectron2 student (no ONNX involved)."""

import os
import pathlib

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

import d2kd.data  # noqa: F401
from d2kd.export import ExportError, export_student, load_recipe
from d2kd.export.strip import (
    StagingDir,
    build_student,
    check_state_dict,
    load_checkpoint,
    strip_checkpoint,
    student_node,
)

HERE = pathlib.Path(__file__).resolve().parent
RETINANET = str(HERE / "recipe_retinanet_student.py")
RCNN = str(HERE / "recipe_faster_rcnn.py")

# What each method's trainer puts beside the student under "distill" (shapes are arbitrary).
KD_PARTS = {
    "fgd": {"terms.fgd.context.p3.conv_mask.weight": torch.zeros(1, 64, 1, 1)},
    "head": {
        "terms.head.assistant.fc6.weight": torch.zeros(128, 64),
        "terms.head.adapt.w": torch.zeros(3),
    },
    "mimic": {"terms.mimic.adapters.p3.weight": torch.zeros(256, 64, 1, 1)},
    "dfad": {
        "generator.fc.weight": torch.zeros(128, 100),
        "generator.bn.running_mean": torch.zeros(4),
    },
}


@pytest.fixture(scope="module")
def retinanet_state():
    cfg = LazyConfig.load(RETINANET)
    torch.manual_seed(0)
    return instantiate(student_node(cfg)).state_dict()


def fake_checkpoint(path, model_sd, method="fgd", mark_d2kd=True, student="RetinaNet"):
    data = {
        "model": model_sd,
        "distill": KD_PARTS[method],
        "trainer": {"iteration": 7, "optimizer": {"state": {}, "param_groups": []}, "hooks": {}},
        "rng": {"torch": torch.get_rng_state()},
        "iteration": 7,
    }
    if mark_d2kd:
        data["d2kd"] = {"format": 1, "distiller": True, "student": student}
    torch.save(data, path)
    return str(path)


def test_student_node_for_distill_and_plain_recipes():
    assert "teacher" not in student_node(LazyConfig.load(RETINANET))
    assert student_node(LazyConfig.load(RETINANET))._target_.__name__ == "RetinaNet"
    assert student_node(LazyConfig.load(RCNN))._target_.__name__ == "GeneralizedRCNN"


@pytest.mark.parametrize("method", sorted(KD_PARTS))
def test_strip_keeps_only_the_student_and_loads_with_zero_key_errors(
    tmp_path, retinanet_state, method
):
    path = fake_checkpoint(tmp_path / "model_final.pth", retinanet_state, method)
    ckpt = load_checkpoint(path)
    state = strip_checkpoint(ckpt, path)
    assert set(state) == set(retinanet_state)
    model = build_student(load_recipe(RETINANET), state, path)  # strict: raises on any mismatch
    assert not model.training
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == []


def test_format_none_writes_a_stock_checkpoint_and_nothing_else(tmp_path, retinanet_state):
    path = fake_checkpoint(tmp_path / "ckpt.pth", retinanet_state, "head")
    out = tmp_path / "out"
    report = export_student(RETINANET, path, str(out), fmt="none")
    assert report["status"] == "passed"
    assert sorted(os.listdir(out)) == ["report.json", "student_model.pth"]
    saved = torch.load(out / "student_model.pth", weights_only=True)
    assert list(saved) == ["model"]
    model = instantiate(student_node(LazyConfig.load(RETINANET)))
    assert model.load_state_dict(saved["model"], strict=True)  # zero missing / unexpected
    assert report["dropped_checkpoint_keys"] == ["d2kd", "distill", "iteration", "rng", "trainer"]


def test_checkpoint_without_d2kd_key_is_rejected_unless_allowed(tmp_path, retinanet_state):
    path = fake_checkpoint(tmp_path / "foreign.pth", retinanet_state, mark_d2kd=False)
    with pytest.raises(ExportError, match=r"foreign\.pth is not a d2kd run.*--allow-foreign"):
        load_checkpoint(path)
    assert "model" in load_checkpoint(path, allow_foreign=True)
    torch.save({"state_dict": retinanet_state}, tmp_path / "nomodel.pth")
    with pytest.raises(ExportError, match=r"nomodel\.pth has no 'model' key"):
        load_checkpoint(str(tmp_path / "nomodel.pth"), allow_foreign=True)


def test_missing_corrupt_and_unsafe_files_are_named(tmp_path):
    with pytest.raises(ExportError, match=r"checkpoint .*nope\.pth does not exist"):
        load_checkpoint(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(ExportError, match=r"could not read checkpoint .*bad\.pth \(corrupt\?\)"):
        load_checkpoint(str(bad))
    torch.save({"model": {}, "d2kd": {}}, bad)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated zip
    with pytest.raises(ExportError, match=r"bad\.pth"):
        load_checkpoint(str(bad))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "d2kd": {}, "hooks": pathlib.PurePosixPath("x")}, unsafe)
    with pytest.raises(
        ExportError, match=r"(?s)weights_only=True\) refused .*unsafe\.pth.*--unsafe-load"
    ):
        load_checkpoint(str(unsafe))
    assert load_checkpoint(str(unsafe), unsafe_load=True)["model"] == {}


def test_config_that_does_not_match_the_checkpoint_is_rejected(tmp_path, retinanet_state):
    path = fake_checkpoint(tmp_path / "ret.pth", retinanet_state)
    with pytest.raises(
        ExportError, match=r"holds a RetinaNet student but .* builds a GeneralizedRCNN"
    ):
        export_student(RCNN, path, str(tmp_path / "out"), fmt="none")
    # same class, other widths: the error lists mis-shaped and missing keys
    with pytest.raises(ExportError, match=r"mis-shaped keys: \['backbone\.fpn_lateral3\.weight"):
        export_student(
            RETINANET,
            path,
            str(tmp_path / "out"),
            fmt="none",
            opts=["model.student.backbone.out_channels=32", "model.student.head.conv_dims=[32,32]"],
        )
    model = build_student(load_recipe(RETINANET), None)
    partial = {k: v for k, v in retinanet_state.items() if not k.startswith("head.")}
    partial["teacher.backbone.stem.conv1.weight"] = torch.zeros(1)
    with pytest.raises(
        ExportError, match=r"(?s)missing keys: \[.head\..*unexpected keys: \['teacher\."
    ):
        check_state_dict(model, partial, "x.pth")
    assert not (tmp_path / "out" / "student_model.pth").exists()


def test_staging_publishes_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "student_e2e.onnx").write_text("stale from an older run")
    (out / "report.json").write_text("{}")
    (out / "unrelated.txt").write_text("keep me")
    stage = StagingDir(str(out))
    with open(stage.file("student_e2e.onnx"), "w") as f:
        f.write("half")
    stage.discard(["student_e2e.onnx"], failed_report='{"status": "failed"}')
    assert sorted(os.listdir(out)) == ["report.failed.json", "unrelated.txt"]
    stage = StagingDir(str(out))
    for name in ("student_e2e.onnx", "report.json"):
        with open(stage.file(name), "w") as f:
            f.write("new")
    stage.publish(["student_e2e.onnx", "report.json"])
    assert sorted(os.listdir(out)) == ["report.json", "student_e2e.onnx", "unrelated.txt"]


def test_cli_exits_non_zero_with_the_message(tmp_path, retinanet_state, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "export_student_cli", HERE.parents[1] / "tools" / "export_student.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    path = fake_checkpoint(tmp_path / "ret.pth", retinanet_state)
    args = ["--config-file", RCNN, "--checkpoint", path, "--output", str(tmp_path / "o")]
    assert cli.main(args) == 1
    assert "[export]" in capsys.readouterr().err
