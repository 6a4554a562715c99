"""Goldens (STYLE.md §12c): every loss in d2kd/losses recomputed from its stored inputs equals
its stored outputs (``python tests/golden/generate.py --check`` does the same from the shell)."""

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate  # noqa: E402


@pytest.mark.parametrize("name", list(generate.CASES))
def test_loss_matches_its_golden(name):
    problems = generate.check_case(name)
    assert not problems, "\n".join(problems)


def test_every_loss_module_has_a_golden():
    modules = {p.stem for p in (generate.ROOT / "d2kd" / "losses").glob("*.py")}
    modules -= {"__init__", "fgd_masks"}  # FGD's masks are in the fgd case
    assert modules <= set(
        generate.CASES
    ), f"no golden case for {sorted(modules - set(generate.CASES))}"


@pytest.mark.parametrize("name", list(generate.CASES))
def test_goldens_are_small_plain_files(name):
    path = generate.path_of(name)
    assert path.stat().st_size < 20_000, f"{path} is {path.stat().st_size} bytes"
    assert not path.read_bytes().startswith(b"version https://git-lfs"), f"{path} is an LFS pointer"


def test_check_reports_a_changed_number(tmp_path, capsys):
    shutil.copy(generate.path_of("feature"), tmp_path / "feature.pt")
    stored = torch.load(tmp_path / "feature.pt", weights_only=True)
    stored["outputs"]["loss"] = stored["outputs"]["loss"] * (1 + 1e-4)
    torch.save(stored, tmp_path / "feature.pt")
    assert generate.main(["--check", "--cases", "feature", "--folder", str(tmp_path)]) == 1
    assert "feature/loss" in capsys.readouterr().out
    (tmp_path / "feature.pt").unlink()
    assert generate.check_case("feature", tmp_path)[0].startswith("feature: ")
