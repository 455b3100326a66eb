"""Atomic file writes: every file the toolkit writes (results, status, tuning data) goes through
here, so an interrupted run leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temp file in the same folder, fsync it, then ``os.replace`` it into place."""
    return atomic_write_texts([(path, text)])[0]


def atomic_write_texts(files) -> list[Path]:
    """Several files that belong together ((path, text) pairs, e.g. a results JSON and its CSV): every
    temp file is written and fsynced first, then all are renamed into place one after another, so a
    kill leaves them out of step only between two renames (microseconds), not while one is written."""
    done: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            done.append((tmp, path))
            with os.fdopen(fd, "w", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for i, (tmp, path) in enumerate(done):
            os.replace(tmp, path)
            done[i] = ("", path)
    except BaseException:
        for tmp, _ in done:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _, path in done]
