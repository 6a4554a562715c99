"""Checks for prerequisites that no package registry can install for the user."""

DETECTRON2_HINT = (
    "d2kd needs detectron2, which is not on PyPI. Install it first, as its INSTALL.md says:\n"
    "  python -m pip install 'setuptools<81' && "
    "python -m pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'\n"
    "(or `pip install --no-build-isolation -e <a detectron2 checkout>`), then install d2kd with "
    "`pip install -e .[dev]`."
)


def require_detectron2() -> None:
    """Raise one ImportError that says what to install when detectron2 is missing or broken."""
    try:
        import detectron2  # noqa: F401
        from detectron2.config import LazyConfig  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(
            f"[d2kd] detectron2 could not be imported ({e}).\n{DETECTRON2_HINT}"
        ) from e
