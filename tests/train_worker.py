"""One training process for tests that launch several under torchrun: ``python -m tests.train_worker CONFIG``.

Runs the real loop (``jobs.train.run_training``) and writes this rank's loss at every step it ran, as exact
floats, to ``<output>/losses-rank<RANK>.json``: what a test compares bit for bit across runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from jobs.entry import setup_logging
from jobs.train import run_training
from training.config import load_config


def main(config: str) -> None:
    setup_logging()
    cfg = load_config(config)
    losses = run_training(cfg)
    Path(cfg.output, f"losses-rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main(sys.argv[1])
