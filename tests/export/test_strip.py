"""Stripping a d2kd checkpoint down to a stock Detectron2 student (no ONNX involved)."""

import os
import pathlib

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

import d2kd.data  # noqa: F401
from d2kd.export import ExportError, export_student, load_recipe
from d2kd.export.staging import StagingDir
from d2kd.export.strip import (
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
    with pytest.raises(ExportError, match=r"file not found: .*nope\.pth"):
        load_checkpoint(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(ExportError, match=r"could not read .*bad\.pth: not a torch checkpoint"):
        load_checkpoint(str(bad))
    torch.save({"model": {}, "d2kd": {}}, bad)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated zip
    with pytest.raises(ExportError, match=r"bad\.pth"):
        load_checkpoint(str(bad))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "d2kd": {}, "hooks": pathlib.PurePosixPath("x")}, unsafe)
    with pytest.raises(
        ExportError, match=r"(?s)refused .*unsafe\.pth.*pathlib\.PurePosixPath.*--unsafe-load"
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


class _Payload:
    """Unpickling this calls ``fn(*args)``: what a crafted checkpoint does to a full unpickle."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _load_cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "export_student_cli", HERE.parents[1] / "tools" / "export_student.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


@pytest.mark.parametrize(
    "payload, refused",
    [
        pytest.param("exec", "GLOBAL exec", id="exec"),
        pytest.param("os.open", "posix.open", id="os.open"),
    ],
)
def test_a_pickle_that_writes_a_file_is_refused_and_writes_nothing(
    tmp_path, retinanet_state, capsys, payload, refused
):
    """Export names what the safe reader refused and why; the payload never runs."""
    marker = tmp_path / "pwned.txt"
    fn, args = {
        "exec": (exec, (f"open({str(marker)!r}, 'w').write('pwned')",)),
        "os.open": (os.open, (str(marker), os.O_CREAT | os.O_WRONLY)),
    }[payload]
    path = tmp_path / "evil.pth"
    torch.save({"model": retinanet_state, "d2kd": {}, "trainer": _Payload(fn, args)}, path)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=rf"(?s)refused .*evil\.pth.*{refused}.*--unsafe-load"):
        export_student(RETINANET, str(path), str(out), fmt="none")
    args = ["--config-file", RETINANET, "--checkpoint", str(path), "--output", str(out)]
    assert _load_cli().main(args + ["--format", "none"]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "corrupt" not in err and refused in err
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_unsafe_load_reads_a_trusted_legacy_checkpoint(tmp_path, retinanet_state):
    """A file saved with pickle protocol 4 (a set among the trainer state) loads with
    --unsafe-load, and without it is refused by name, not called corrupt."""
    path = tmp_path / "legacy.pth"
    extra = {"hooks": {"seen_epochs": {1, 2}}, "iteration": 7}
    data = {"model": retinanet_state, "trainer": extra, "d2kd": {"student": "RetinaNet"}}
    torch.save(data, path, pickle_protocol=4)
    with pytest.raises(ExportError, match=r"(?s)refused .*legacy\.pth.*--unsafe-load"):
        load_checkpoint(str(path))
    report = export_student(RETINANET, str(path), str(tmp_path / "out"), fmt="none",
                            unsafe_load=True)  # fmt: skip
    assert report["status"] == "passed" and "trainer" in report["dropped_checkpoint_keys"]


def test_a_mistyped_override_is_refused_like_train_net(tmp_path, retinanet_state, capsys):
    """``--opts`` goes through d2kd.config: an unknown key is an error naming the close keys
    (LazyConfig.apply_overrides alone would add it, and the mistake would go unnoticed)."""
    path = fake_checkpoint(tmp_path / "ret.pth", retinanet_state)
    args = ["--config-file", RETINANET, "--checkpoint", path, "--output", str(tmp_path / "o"),
            "--format", "none", "--opts", "model.student.num_clases=5"]  # fmt: skip
    assert _load_cli().main(args) == 1
    err = capsys.readouterr().err
    assert "[export] unknown config key 'model.student.num_clases'" in err
    assert "did you mean model.student.num_classes" in err
    assert not (tmp_path / "o" / "student_model.pth").exists()
    # an existing key and a '+' key are accepted
    opts = ["model.student.num_classes=18", "+model.student.test_score_thresh=0.3"]
    ok = export_student(RETINANET, path, str(tmp_path / "o"), fmt="none", opts=opts)
    assert ok["status"] == "passed"


def test_every_documented_export_command_parses():
    """The export commands in the READMEs are accepted by the CLI's parser, and their recipes
    exist (projects/HEAD once passed positional arguments and failed)."""
    import re
    import shlex

    cli = _load_cli()
    root = HERE.parents[1]
    found = 0
    for readme in [root / "README.md", *sorted(root.glob("projects/*/README.md"))]:
        text = readme.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            m = re.search(r"python tools/export_student\.py (.*)", line)
            if not m:
                continue
            optional = re.sub(r"\[[^\]]*\]", " ", m.group(1).split("#")[0])  # [--int8] ...
            words = shlex.split(optional)
            args = cli.parse_args(words)  # SystemExit(2) on an unknown or missing argument
            assert (root / args.config_file).is_file(), f"{readme}: {args.config_file} missing"
            found += 1
    assert found >= 2
