"""Published figures of the corpora this project measures itself against, each with where it is stated.

Only figures stated in the cited source are listed; a figure the source does not state (for
example HD-VG-130M's average clip length) is left out rather than estimated.
"""

from __future__ import annotations

from typing import Any

#: name -> figures (``None`` where not published) and the source of each.
REFERENCES: dict[str, dict[str, Any]] = {
    "HD-VG-130M": {
        "clips": 130_000_000,
        "resolution": "high-definition (720p), widescreen, watermark-free",
        "captions": "BLIP-2",
        "sources": {
            "clips": "Wang et al., Swap Attention in Spatiotemporal Diffusions for Text-to-Video Generation "
                     "(VideoFactory), arXiv:2305.10874, abstract: \"130 million text-video pairs\"",
            "resolution": "arXiv:2305.10874, abstract: \"high-definition, widescreen and watermark-free\"",
            "captions": "arXiv:2305.10874, section on the HD-VG-130M dataset: captions by BLIP-2",
        },
    },
    "Panda-70M": {
        "clips": 70_800_000,
        "source_videos": 3_800_000,
        "mean_duration_s": 8.5,
        "hours": 166_800,
        "mean_caption_words": 13.2,
        "resolution": "720p",
        "captions": "multiple cross-modality teachers, best caption chosen by a retrieval model",
        "sources": {
            "clips": "Chen et al., Panda-70M: Captioning 70M Videos with Multiple Cross-Modality Teachers, "
                     "arXiv:2402.19479, Table 1 (#Videos 70.8M)",
            "source_videos": "arXiv:2402.19479, abstract: \"3.8M high-resolution videos\" from HD-VILA-100M",
            "mean_duration_s": "arXiv:2402.19479, Table 1 (average video length 8.5 s)",
            "hours": "arXiv:2402.19479, Table 1 (total video length 166.8K hours)",
            "mean_caption_words": "arXiv:2402.19479, Table 1 (average text length 13.2 words)",
            "resolution": "arXiv:2402.19479, Table 1 (720p)",
            "captions": "arXiv:2402.19479, abstract",
        },
    },
}


def our_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """This corpus's figures under the same names as :data:`REFERENCES`."""
    distributions, captions = stats["distributions"], stats["captions"]
    words = captions.get("words", {}).get("mean") if captions.get("captioned") else None
    return {
        "clips": stats["totals"]["clips"],
        "source_videos": stats["totals"]["sources_with_clips"],
        "mean_duration_s": distributions["duration_s"].get("mean"),
        "hours": stats["totals"]["hours"],
        "mean_caption_words": words,
        "hd_share": distributions["resolution"]["hd_share"],
        "widescreen_share": distributions["display_aspect"]["widescreen_share"],
    }
