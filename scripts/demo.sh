#!/usr/bin/env bash
# Set up (if needed), start a local Ray head, submit the curation job over the sample videos with
# `ray job submit`, print where the corpus is, and stop the head. Extra arguments go to demo.curate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m demo.curate "$@"
