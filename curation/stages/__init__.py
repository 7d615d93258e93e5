"""The curation stages, one module each, all fulfilling ``curation.stage.Stage``.

``stage_class(name)`` finds a stage by the name ``curation.config.STAGES`` gives it: the module
``curation.stages.<name>`` and its ``STAGE`` class. Nothing else lists the stages.
"""

from __future__ import annotations

import importlib

from curation.stage import Stage


def stage_class(name: str) -> type[Stage]:
    """The class of the stage called ``name``."""
    return importlib.import_module(f"curation.stages.{name}").STAGE
