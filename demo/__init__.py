"""The demo and its assets: sample videos made with ffmpeg, and UNTRAINED tiny models built from configs.

Not part of the installed package (``pyproject.toml`` ships curation, shards, storage, stats, training
and jobs): these exist so that ``scripts/demo.sh`` shows the whole machinery on a fresh machine with no
downloads, and so that the tests run the real loading code on real (tiny) checkpoints.
"""
