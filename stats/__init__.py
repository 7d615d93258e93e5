"""Dataset statistics of a corpus: the numbers (``compute``), the figures (``plots``) and the report (``report``).

Everything is computed from ``index/``, ``rejections/`` and ``manifest.json`` only, never
from the videos, so a corpus of millions of clips is summarised in minutes on one machine.
"""
