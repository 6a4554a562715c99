"""Shared fixtures: a hermetic dataset cache and tiny models built from the test recipes."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_DISTILL = str(ROOT / "tests" / "configs" / "tiny_distill.py")
TINY_PLAIN = str(ROOT / "tests" / "configs" / "tiny_plain.py")


@pytest.fixture(scope="session", autouse=True)
def d2kd_cache(tmp_path_factory):
    """Render synthetic data into a per-session folder, never into the home directory."""
    path = os.environ.get("D2KD_TEST_CACHE") or str(tmp_path_factory.mktemp("d2kd_cache"))
    old = os.environ.get("D2KD_CACHE")
    os.environ["D2KD_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("D2KD_CACHE", None)
    else:
        os.environ["D2KD_CACHE"] = old
