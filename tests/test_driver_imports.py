"""The curation driver and its write tasks stay light: no torch unless a stage that needs it runs.

At 130M clips the driver's memory is the job's limit (and every Ray worker that only writes shards
would pay torch's ~600 MB too).
"""

from __future__ import annotations

import subprocess
import sys


def test_the_curation_driver_does_not_import_torch():
    code = ("import sys, curation.pipeline, curation.write, shards.writer; "
            "print(sorted(m for m in ('torch', 'transformers', 'easyocr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
