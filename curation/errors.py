"""The one exception a stage raises to reject a source or a clip.

Stages never let bad input crash the job: anything they cannot use they turn into a
``Rejection`` with a short machine-readable ``reason`` and a ``detail`` a person can act on.
The stage runner converts it (and any unexpected exception) into a rejected row.
"""

from __future__ import annotations


class Rejection(Exception):
    """A source or clip that cannot go into the corpus, and why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
