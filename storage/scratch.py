"""Local scratch space for media tools that need a real file (ffmpeg, PyAV, PySceneDetect).

The pattern the peers use (Cosmos-Curate, video2dataset): copy in, process, copy out, clean up. A
scratch directory lives for one task; whatever happens in it, it is removed when the task ends, so
a node's disk holds only the work in flight. ``VIDEOFACTORY_SCRATCH`` chooses the parent directory
(a fast local disk); by default it is the system's temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.location import Location

SCRATCH_ENV = "VIDEOFACTORY_SCRATCH"


@contextmanager
def scratch_dir(label: str, parent: str | None = None) -> Iterator[Path]:
    """A private directory for one task under ``parent`` (``VIDEOFACTORY_SCRATCH`` wins), removed afterwards."""
    parent = os.environ.get(SCRATCH_ENV) or parent
    if parent:
        os.makedirs(parent, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"videofactory-{label}-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def local_copy(uri: str, scratch: Path) -> Path:
    """A local file with the content of ``uri``: the file itself when local, else a copy in ``scratch``.

    Copies are named after the URI's hash, so asking twice within one task copies once.
    """
    location = Location(uri)
    if location.is_local:
        return location.local_path()
    suffix = Path(location.name).suffix
    dest = scratch / "copies" / (hashlib.sha256(location.uri.encode()).hexdigest()[:24] + suffix)
    if not dest.exists():
        location.download_to(dest)
    return dest
