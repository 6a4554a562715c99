"""tools/train_net.py end to end: checkpoints, bad input, exact resume after SIGKILL, 2 processes."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.config import instantiate
from helpers import ROOT, TINY_DISTILL, TINY_PLAIN, TRAIN_NET, load_cfg, run_train_net


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A (random) tiny teacher saved as a plain checkpoint; KD mechanics do not need a good one."""
    torch.manual_seed(0)
    teacher = instantiate(load_cfg(TINY_PLAIN).model)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.pth")
    torch.save({"model": teacher.state_dict()}, path)
    return path


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


SHORT = ["train.max_iter=3", "train.checkpointer.period=1", "train.checkpointer.max_to_keep=10"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, teacher_ckpt):
    """A 3-iteration distillation run with a checkpoint every iteration, started in a folder
    where a killed save had left a temporary file."""
    out = tmp_path_factory.mktemp("short") / "run"
    out.mkdir()
    (out / ".tmp-abc123.pth").write_bytes(b"partial")
    args = ["--config-file", TINY_DISTILL, f"model.teacher.weights={teacher_ckpt}", *SHORT]
    _ok(run_train_net([*args, f"train.output_dir={out}"]))
    return out, args


def test_a_run_cleans_temporaries_logs_the_teacher_report_and_writes_0644(short_run):
    out, _ = short_run
    assert not list(out.glob(".tmp-*")), "a killed save's temporary file was left behind"
    log = (out / "log.txt").read_text()
    assert re.search(r"\[Teacher\] .*teacher.pth: \d+ tensors loaded, 0 missing", log)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert modes["model_final.pth"] == modes["metrics.json"] == modes["config.yaml"], modes


def test_resume_past_max_iter_names_the_iteration(short_run):
    out, args = short_run
    proc = run_train_net(["--resume", *args, f"train.output_dir={out}", "train.max_iter=1"])
    assert proc.returncode != 0
    assert "is at iteration 2, past train.max_iter=1" in proc.stdout + proc.stderr


def test_distill_run_writes_a_stock_student_checkpoint(short_run):
    out, _ = short_run
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["d2kd"]["distiller"] and ckpt["iteration"] == 2
    assert set(ckpt["distill"]) == {
        f"mse.adapters.{k}.{p}" for k in ("p3", "p4", "p5") for p in ("weight", "bias")
    }
    student = instantiate(load_cfg().model.student)
    result = student.load_state_dict(ckpt["model"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any(k.startswith("teacher") for k in ckpt["model"])
    metrics = (out / "metrics.json").read_text()
    assert '"loss_mse_p3"' in metrics and '"loss_cls"' in metrics
    assert not list(out.glob(".tmp-*")), "no temporary checkpoint may remain"


def test_eval_only_needs_no_teacher(tmp_path, short_run):
    out, _ = short_run
    proc = run_train_net(
        [
            "--config-file",
            TINY_DISTILL,
            "--eval-only",
            f"train.output_dir={tmp_path / 'eval'}",
            "model.teacher.weights=",
            f"train.init_checkpoint={out / 'model_final.pth'}",
        ]
    )
    _ok(proc)
    assert (tmp_path / "eval" / "eval_final.json").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.teacher.weights=/no/such/teacher.pth"],
            r"teacher weights: file not found: /no/such/teacher.pth",
        ),
        (
            ["train.max_iters=3"],
            "unknown config key 'train.max_iters'.*did you mean train.max_iter",
        ),
        (["model.teacher.weights=CORRUPT"], "could not read .*corrupt.pth: not a torch checkpoint"),
        (["model.teacher.weights=STUDENT"], "(?s)cannot load.*shape of"),
        (["model.terms.mse.levels=[p2]"], "level 'p2' not in the student's backbone outputs"),
        (
            [
                "model.teacher.weights=TEACHER",
                "train.teacher_check.num_images=2",
                "train.teacher_check.min_ap=50",
            ],
            "AP .* on the first 2 test images is below the recipe's floor",
        ),
    ],
)
def test_bad_input_stops_before_training_and_keeps_files(
    tmp_path, teacher_ckpt, overrides, message
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model_final.pth").write_bytes(b"earlier result")
    (out / "config.yaml").write_text("the config of the run that made model_final.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00" * 64)
    student = tmp_path / "student.pth"
    torch.save({"model": instantiate(load_cfg().model.student).state_dict()}, student)
    overrides = [
        o.replace("CORRUPT", str(corrupt))
        .replace("STUDENT", str(student))
        .replace("TEACHER", teacher_ckpt)
        for o in overrides
    ]
    proc = run_train_net(["--config-file", TINY_DISTILL, f"train.output_dir={out}", *overrides])
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
    assert (out / "model_final.pth").read_bytes() == b"earlier result"
    assert (out / "config.yaml").read_text().startswith("the config of the run")
    assert not list(out.glob("model_0*.pth"))


def test_missing_config_file_is_named(tmp_path):
    proc = run_train_net(["--config-file", str(tmp_path / "nope.py")])
    assert (
        proc.returncode != 0 and "config file not found" in proc.stderr and "nope.py" in proc.stderr
    )


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, teacher_ckpt):
    common = [
        "--config-file",
        TINY_DISTILL,
        f"model.teacher.weights={teacher_ckpt}",
        "train.max_iter=6",
        "train.checkpointer.period=2",
    ]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _ok(run_train_net([*common, f"train.output_dir={ref}"]))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, TRAIN_NET, *common, f"train.output_dir={cut}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (cut / "model_0000003.pth").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "model_final.pth").exists(), "the run was killed too late to test resume"

    _ok(run_train_net(["--resume", *common, f"train.output_dir={cut}"]))
    a = torch.load(ref / "model_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(cut / "model_final.pth", map_location="cpu", weights_only=False)
    for part in ("model", "distill"):
        for k in a[part]:
            torch.testing.assert_close(
                b[part][k].float(),
                a[part][k].float(),
                rtol=1e-5,
                atol=1e-5,
                msg=lambda m: f"{part}.{k}: {m}",
            )


def test_resume_from_every_early_iteration_is_exact(tmp_path, short_run):
    """A run resumed from its checkpoint at iteration 0 or 1 ends bit for bit where an
    uninterrupted one does: weights, BN statistics, KD parts and optimizer momentum. (Early steps
    of training from scratch amplify any rounding difference, e.g. TorchScript's executor taking
    another path on a fresh process's first calls, so a tolerance would hide the fault.)"""
    ref, args = short_run
    a = torch.load(ref / "model_final.pth", map_location="cpu", weights_only=True)
    for k in (0, 1):
        run = tmp_path / f"from{k}"
        run.mkdir()
        name = f"model_{k:07d}.pth"
        (run / name).write_bytes((ref / name).read_bytes())
        (run / "last_checkpoint").write_text(name)
        _ok(run_train_net(["--resume", *args, f"train.output_dir={run}"]))
        b = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)
        for part in ("model", "distill"):
            for key in a[part]:
                assert torch.equal(a[part][key], b[part][key]), f"from {k}: {part}.{key}"
        moms = a["trainer"]["optimizer"]["state"], b["trainer"]["optimizer"]["state"]
        for i, state in moms[0].items():
            assert torch.equal(state["momentum_buffer"], moms[1][i]["momentum_buffer"]), (k, i)


def test_two_processes_on_cpu(tmp_path, teacher_ckpt):
    out = tmp_path / "ddp"
    proc = run_train_net(
        [
            "--config-file",
            TINY_DISTILL,
            "--num-gpus",
            "2",
            "--dist-url",
            "auto",
            f"train.output_dir={out}",
            f"model.teacher.weights={teacher_ckpt}",
            "train.max_iter=2",
            # 2 images per process: the head's BN sees P7 (1x1 here) and needs 2 values.
            "dataloader.train.total_batch_size=4",
        ]
    )
    _ok(proc)
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher") for k in ckpt["model"])
    # 2 steps, within Detectron2's 2-step timer warm-up, still log their time (s/iteration).
    assert '"time": ' in (out / "metrics.json").read_text()


def test_ddp_ignores_every_teacher_tensor():
    model = instantiate(load_cfg().model)
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    teacher = {n for n, _ in model.named_parameters() if n.startswith("teacher.")}
    teacher |= {n for n, _ in model.named_buffers() if n.startswith("teacher.")}
    assert teacher and teacher == ignored


def test_gradient_clipping_hook_bounds_the_norm():
    from d2kd.engine.hooks import GradientClipping

    class Trainer:
        pass

    net = torch.nn.Linear(4, 4)
    (net(torch.ones(2, 4)).sum() * 1000).backward()
    trainer = Trainer()
    trainer.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    hook = GradientClipping(max_norm=1.0)
    hook.trainer = trainer
    hook.after_backward()
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in net.parameters()))
    assert total <= 1.0 + 1e-5
