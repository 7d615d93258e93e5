"""Clip filters: each a pure function of a clip's frame sample (``curation.frames.FrameSample``) and its config.

A filter returns scores; ``curation.filter_stage`` compares them with the configured thresholds,
records the decision and rejects (or, in score-only mode, only records). Kept free of heavy imports:
every Ray worker imports this package, and only the workers that detect text should load torch.
"""
