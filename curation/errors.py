"""The two kinds of failure a stage tells apart: the input is bad, or the machine is.

Stages never let bad input crash the job: anything they cannot use they turn into a
``Rejection`` with a short machine-readable ``reason`` and a ``detail`` a person can act on.
The stage runner converts it (and any unexpected exception) into a rejected row.

An ``EnvironmentFault`` is the opposite verdict: the input may be fine, the machine was not (a full
disk, memory, a tool killed by a signal or out of time). It is never recorded as a rejection: the
task fails, and a rerun redoes the work once the machine is fixed.
"""

from __future__ import annotations


class Rejection(Exception):
    """A source or clip that cannot go into the corpus, and why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EnvironmentFault(RuntimeError):
    """A failure of the machine, not of the input: fail the task so that a rerun redoes it."""
