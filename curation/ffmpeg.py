"""Running ffmpeg and ffprobe: argument lists only, bounded in time, errors turned into readable text.

Every call goes through here so that no stage ever builds a shell string from data, every call has
a timeout (a hung decoder must not hang the job) and the tail of ffmpeg's stderr is what a rejection
shows a person.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from curation.errors import EnvironmentFault

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: What ffmpeg prints when the machine, not the input, failed it (strerror texts).
MACHINE_FAULTS = ("No space left on device", "Disk quota exceeded", "Cannot allocate memory",
                  "Too many open files", "Read-only file system")


class ToolError(RuntimeError):
    """ffmpeg or ffprobe failed; ``message`` holds the useful tail of its stderr."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.message = message


def require_tools() -> None:
    """Fail early, with the fix, when ffmpeg is not installed."""
    missing = [t for t in (FFMPEG, FFPROBE) if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found on PATH: install FFmpeg (Debian: `apt-get install ffmpeg`, "
            "or run scripts/setup.sh)"
        )


def stderr_tail(stderr: str, lines: int = 3) -> str:
    """The last few non-empty lines of a tool's stderr, joined: usually the actual error."""
    kept = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no error message"


def run(args: Sequence[str], timeout_s: float, tool: str = FFMPEG) -> subprocess.CompletedProcess[str]:
    """Run ``[tool, *args]``; raise ToolError on a non-zero exit or a timeout."""
    try:
        proc = subprocess.run(
            [tool, *args], capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentFault(f"{tool} timed out after {timeout_s:.0f} s (an overloaded machine?); rerun the "
                               "job, which redoes this work") from exc
    if proc.returncode < 0:
        raise EnvironmentFault(f"{tool} was killed by signal {-proc.returncode} (out of memory?); rerun the job, "
                               "which redoes this work")
    # Checked whatever the exit status: ffmpeg 5.1 exits 0 when writing the trailer fails for want of
    # space, leaving a truncated file that would otherwise pass for bad content.
    fault = next((m for m in MACHINE_FAULTS if m in proc.stderr), None)
    if fault is not None:
        raise EnvironmentFault(f"{tool}: {fault} ({stderr_tail(proc.stderr, 1)}); free the resource and rerun "
                               "the job, which redoes this work")
    if proc.returncode != 0:
        raise ToolError(tool, stderr_tail(proc.stderr))
    return proc


def ffprobe_json(path: str, extra: Sequence[str] = (), timeout_s: float = 60.0) -> dict[str, Any]:
    """ffprobe's JSON description of ``path`` (format and streams unless ``extra`` asks otherwise)."""
    args = ["-v", "error", "-print_format", "json", *(extra or ("-show_format", "-show_streams")), path]
    proc = run(args, timeout_s, tool=FFPROBE)
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ToolError(FFPROBE, f"unparseable output ({exc})") from exc


def parse_rate(text: str | None) -> Fraction | None:
    """ffprobe's ``num/den`` rates (``0/0`` means unknown)."""
    if not text:
        return None
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None
