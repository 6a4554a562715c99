"""An export folder that changes all at once or not at all.

A report names the files of one run, so a reader must never see a new ``report.json`` beside
old graphs, nor old graphs without a report after a failed run. Files are built in a hidden
folder inside the output folder (same file system, so every move is an atomic rename) and
published one rename each, the report last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Iterable, List, Optional

from ..utils.files import atomic_write_text, remove_stale_temporaries, write_json

__all__ = ["StagingDir"]

_PREFIX = ".export-tmp-"


class StagingDir:
    """Build an export in ``final_dir/.export-tmp-XXXX/``; publish it only when it is good.

    * :meth:`publish` moves the artifacts into ``final_dir`` one ``os.replace`` each, and the
      report last, after removing any previous report first: a ``report.json`` names only files
      of its own run, and files without a report are not a finished export.
    * :meth:`discard` (any failure) deletes the staging folder, removes previous artifacts with
      the names this run would have written (so no stale ``*.onnx`` can pass for this run's
      result) and leaves at most a ``report.failed.json``.

    Creating one removes what killed runs left in ``final_dir`` (staging folders, temporaries):
    one export owns its output folder while it runs.
    """

    REPORT = "report.json"
    FAILED_REPORT = "report.failed.json"

    def __init__(self, final_dir: str) -> None:
        self.final_dir = os.path.abspath(final_dir)
        os.makedirs(self.final_dir, exist_ok=True)
        remove_stale_temporaries(self.final_dir)
        for name in os.listdir(self.final_dir):
            if name.startswith(_PREFIX):
                shutil.rmtree(os.path.join(self.final_dir, name), ignore_errors=True)
        self.path = tempfile.mkdtemp(prefix=_PREFIX, dir=self.final_dir)

    def file(self, name: str) -> str:
        """Path of ``name`` inside the staging folder."""
        return os.path.join(self.path, name)

    def write_report(self, report: Any) -> str:
        """Write ``report`` as strict JSON (NaN -> null) to the staging folder's report."""
        return str(write_json(report, self.file(self.REPORT)))

    def publish(self, names: Iterable[str]) -> List[str]:
        """Move ``names`` (report last) into the final folder; return their final paths."""
        names = list(names)
        for stale in (self.REPORT, self.FAILED_REPORT):
            if os.path.exists(os.path.join(self.final_dir, stale)):
                os.unlink(os.path.join(self.final_dir, stale))
        ordered = [n for n in names if n != self.REPORT] + [n for n in names if n == self.REPORT]
        out = []
        for name in ordered:
            dst = os.path.join(self.final_dir, name)
            os.replace(self.file(name), dst)
            out.append(dst)
        shutil.rmtree(self.path, ignore_errors=True)
        return out

    def discard(self, would_write: Iterable[str], failed_report: Optional[str] = None) -> None:
        """Drop the staging folder and stale artifacts; optionally leave a failure report.

        Args:
            would_write: artifact names this run would have published.
            failed_report: JSON text for ``report.failed.json``, or None.
        """
        shutil.rmtree(self.path, ignore_errors=True)
        for name in list(would_write) + [self.REPORT]:
            stale = os.path.join(self.final_dir, name)
            if os.path.isfile(stale):
                os.unlink(stale)
        if failed_report is not None:
            atomic_write_text(os.path.join(self.final_dir, self.FAILED_REPORT), failed_report)
