"""The one configuration system of every videofactory job: pydantic models, YAML files and ``--set`` overrides.

Each job keeps its schema where its code lives (``curation.config``, ``training.config``,
``training.model.config``), all built on ``Config`` from here, so that every config

- refuses keys it does not know, at any depth, naming the key and where it is (a misspelt threshold
  would otherwise silently keep its default);
- is read from YAML the same way (``load_yaml``) and takes the same dotted overrides
  (``apply_overrides``: ``filter.text.max_area=0.01``, values parsed as YAML);
- turns into plain JSON-able data and back (``to_dict``/``from_dict``): configs travel to Ray
  workers as dicts, and are stored in manifests and checkpoints.
"""

from settings.core import (
    Config,
    ConfigError,
    apply_overrides,
    format_errors,
    load,
    load_yaml,
    parse_override,
    set_key,
)

__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "format_errors",
    "load",
    "load_yaml",
    "parse_override",
    "set_key",
]
