"""The export package's two exceptions, so every module and the CLIs catch the same classes."""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["ExportError", "GateFailed"]


class ExportError(RuntimeError):
    """A user-facing export failure; the message starts with ``[export]`` and names the culprit."""


class GateFailed(ExportError):
    """The parity gate failed; ``report`` holds every measurement and failure."""

    def __init__(self, message: str, report: Dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
