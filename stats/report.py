"""``stats/stats.json`` and ``stats/report.html``: the statistics of one corpus, or of two side by side.

The HTML is a single self-contained file (figures embedded as PNG data URIs, no scripts, no external
styles), so it can be mailed, attached to an issue or opened from a shared disk.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from stats import plots
from stats.compute import compute_stats
from stats.gallery import Gallery, Thumb, collect_gallery
from stats.reference import REFERENCES, our_figures
from storage import Location

log = logging.getLogger(__name__)

STATS_DIR = "stats"
STATS_FILE = "stats.json"
REPORT_FILE = "report.html"

#: Distributions of the report: key in ``stats["distributions"]``, title, axis label.
DISTRIBUTIONS = (
    ("duration_s", "Clip duration", "seconds"),
    ("short_side_px", "Short side", "pixels"),
    ("display_aspect", "Display aspect", "width / height"),
    ("fps", "Frame rate", "frames per second"),
    ("bitrate_mbps", "Bitrate", "Mbit/s (clip bytes x 8 / duration)"),
    ("clips_per_source", "Clips per source", "clips"),
)

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;width:48%;margin:.5%;vertical-align:top}img{width:100%}.note{color:#666;font-style:italic}
.thumb{display:block;width:auto;margin:0 0 .8em}.thumb img{width:auto;max-width:100%}
.thumb figcaption{font-size:12px}.fail{color:#b00}"""


def write_report(root: str | Location, compare: str | Location | None = None,
                 out: str | Location | None = None, gallery: bool = True) -> Location:
    """Compute the statistics, write ``stats.json`` and ``report.html`` into ``out``; return ``out``.

    ``out`` defaults to ``<root>/stats``; like the corpora, it may be a local directory or an
    object-store prefix (``s3://bucket/corpus/stats``). With ``compare``, the other corpus's
    statistics sit beside this one's in both files. ``gallery`` adds thumbnail strips of sample kept
    and rejected clips to the report (``stats.gallery``; they are not statistics, so not in the JSON).
    """
    roots = [Location(str(root)), *([Location(str(compare))] if compare else [])]
    runs = [compute_stats(r) for r in roots]
    galleries = [collect_gallery(r) for r in roots] if gallery else []
    labels = _labels(roots)
    out_dir = Location(str(out)) if out else roots[0] / STATS_DIR
    if out_dir.is_file():
        raise ValueError(f"{out_dir} is a file; give --out a directory (it is created when missing)")
    document = {**runs[0], "label": labels[0], "reference": REFERENCES}
    if compare:
        document["compare"] = {**runs[1], "label": labels[1]}
    (out_dir / STATS_FILE).write_text(json.dumps(document, indent=1, ensure_ascii=False))
    (out_dir / REPORT_FILE).write_text(render(runs, labels, galleries))
    log.info("wrote %s and %s", out_dir / STATS_FILE, out_dir / REPORT_FILE)
    return out_dir


def _labels(roots: list[Location]) -> list[str]:
    """Short names for the corpora: their directory (or prefix) names, their URIs when those collide."""
    names = [r.name or r.uri for r in roots]
    return names if len(set(names)) == len(names) else [r.uri for r in roots]


def render(runs: Sequence[dict[str, Any]], labels: Sequence[str], galleries: Sequence[Gallery] = ()) -> str:
    """The whole HTML page (with the gallery section when ``galleries`` are given, one per corpus)."""
    sections: list[Callable[[Sequence[dict[str, Any]], Sequence[str]], str]] = [
        _totals, _funnel, _distributions, _scores, _captions, _throughput, _reference]
    title = "Corpus statistics: " + " vs ".join(labels)
    head = (f"<h1>{_e(title)}</h1>" + "".join(
        f"<p><b>{_e(label)}</b>: {_e(run['corpus'])}; manifest written {_e(run.get('manifest_created') or '?')}; "
        f"statistics computed {_e(run['computed'])} in {run['seconds']:.2f} s</p>" for run, label in zip(runs, labels)))
    body = head + "".join(section(runs, labels) for section in sections)
    if galleries:
        body += _gallery(galleries, labels)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


# --- sections -------------------------------------------------------------------------------------

def _totals(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    rows = [
        ("clips", [r["totals"]["clips"] for r in runs]),
        ("hours of video", [r["totals"]["hours"] for r in runs]),
        ("clip bytes", [r["totals"]["bytes"] for r in runs]),
        ("shards", [r["totals"]["shards"] for r in runs]),
        ("shard bytes", [r["totals"]["shard_bytes"] for r in runs]),
        ("sources with clips", [r["totals"]["sources_with_clips"] for r in runs]),
        ("sources listed", [r["funnel"]["sources"]["listed"] for r in runs]),
        ("sources unaccounted for", [r["funnel"]["sources"]["unaccounted"] for r in runs]),
        ("rejection rows", [r["funnel"]["rejections"] for r in runs]),
    ]
    return "<h2>Totals</h2>" + _table(["", *labels], [[name, *values] for name, values in rows])


def _funnel(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    steps = _merged_steps([[s["step"] for s in r["funnel"]["steps"]] for r in runs])
    figure = _figure(plots.funnel_figure([r["funnel"] for r in runs], labels, steps), "funnel", wide=True)
    rows = []
    for step in steps:
        found = [next((s for s in r["funnel"]["steps"] if s["step"] == step), {}) for r in runs]
        reasons = "; ".join(f"{k}: {v:,}" for k, v in found[0].get("reasons", {}).items())
        dropped = found[0].get("scenes_dropped")
        if dropped:
            reasons += f"{'; ' if reasons else ''}scenes dropped: {dropped:,}"
        rows.append([step, found[0].get("unit", ""), *[f.get("count") for f in found], reasons])
    reason_header = f"rejected ({labels[0]}): reason: count" if len(runs) > 1 else "rejected: reason: count"
    return ("<h2>Funnel</h2><p>Sources until the scene split, clips after it. Every listed source ends with "
            "clips cut from it or with one whole-source rejection; the totals count those that do neither as "
            "unaccounted for.</p>" + figure
            + _table(["step", "unit", *labels, reason_header], rows))


def _merged_steps(orders: Sequence[list[str]]) -> list[str]:
    """Every corpus's funnel steps in one order: a step only one corpus has goes after its predecessor."""
    merged = list(orders[0])
    for order in orders[1:]:
        for previous, step in zip([None, *order], order):
            if step not in merged:
                merged.insert(merged.index(previous) + 1 if previous in merged else len(merged), step)
    return merged


def _distributions(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    header = ["distribution", "corpus", "count", "mean", "min", "p5", "p25", "p50", "p75", "p95", "max"]
    rows, figures = [], []
    for key, title, unit in DISTRIBUTIONS:
        dists = [r["distributions"][key] for r in runs]
        for dist, label in zip(dists, labels):
            q = dist.get("quantiles", {})
            rows.append([f"{title} ({unit})", label, dist["count"], dist.get("mean"), dist.get("min"),
                         q.get("p5"), q.get("p25"), q.get("p50"), q.get("p75"), q.get("p95"), dist.get("max")])
        ylabel = "share of sources" if key == "clips_per_source" else "share of clips"
        figures.append(_figure(plots.histogram_figure(dists, labels, title, unit, ylabel=ylabel), key))
    shares = [["high-definition (short side ≥ 720 px)",
               *[_percent(r["distributions"]["resolution"]["hd_share"]) for r in runs]],
              [_widescreen_label(runs[0]), *[_percent(r["distributions"]["display_aspect"]["widescreen_share"])
                                             for r in runs]]]
    figures.append(_figure(plots.top_figure([r["distributions"]["resolution"]["top"] for r in runs], labels,
                                            "Most frequent resolutions (clips)"), "resolution"))
    figures.append(_figure(plots.top_figure([r["distributions"]["fps"]["top"] for r in runs], labels,
                                            "Most frequent frame rates (clips)"), "fps-top"))
    return ("<h2>Distributions</h2>" + _table(header, rows) + _table(["share of clips", *labels], shares)
            + "".join(figures))


def _widescreen_label(run: dict[str, Any]) -> str:
    """``widescreen (16:9 ± 5 %)``: the definition the quality filter of (the first) corpus used."""
    wide = run["distributions"]["display_aspect"]["widescreen"]
    aspect = "16:9" if abs(wide["aspect"] - 16 / 9) < 1e-9 else f"{wide['aspect']:.3g}:1"
    return f"widescreen ({aspect} ± {wide['tolerance'] * 100:g} %)"


def _scores(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    names = sorted({name for r in runs for name in r["scores"]})
    if not names:
        return "<h2>Filter scores</h2><p class=\"note\">no filter scores in the index yet</p>"
    rows, figures = [], []
    for name in names:
        dists = [r["scores"].get(name, {"count": 0}) for r in runs]
        threshold = next((d["threshold"] for d in dists if "threshold" in d), None)
        for dist, label in zip(dists, labels):
            q = dist.get("quantiles", {})
            rows.append([name, label, dist["count"], dist.get("mean"), q.get("p5"), q.get("p50"), q.get("p95"),
                         dist.get("threshold"), dist.get("at_or_above")])
        figures.append(_figure(plots.histogram_figure(dists, labels, f"Score: {name}", name, threshold),
                               f"score-{name}"))
    header = ["score", "corpus", "clips", "mean", "p5", "p50", "p95", "threshold", "clips ≥ threshold"]
    return "<h2>Filter scores</h2>" + _table(header, rows) + "".join(figures)


def _captions(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    if not any(r["captions"]["captioned"] for r in runs):
        return "<h2>Captions</h2><p class=\"note\">no captions yet</p>"
    caps = [r["captions"] for r in runs]
    rows = [
        ["captioned clips", *[c["captioned"] for c in caps]],
        ["mean words", *[c.get("words", {}).get("mean") for c in caps]],
        ["median words", *[c.get("words", {}).get("quantiles", {}).get("p50") for c in caps]],
        ["vocabulary (distinct words)", *[c.get("vocabulary") for c in caps]],
        ["distinct captions", *[c.get("distinct_captions") for c in caps]],
        ["share of duplicate captions", *[_percent(c.get("duplicate_share")) for c in caps]],
    ]
    figures = [
        _figure(plots.histogram_figure([c.get("words", {"count": 0}) for c in caps], labels, "Caption length",
                                       "words"), "caption-words"),
        _figure(plots.top_figure([c.get("top_words", []) for c in caps], labels, "Most frequent words"), "words"),
        _figure(plots.top_figure([c.get("top_bigrams", []) for c in caps], labels, "Most frequent phrases (bigrams)"),
                "bigrams"),
    ]
    return ("<h2>Captions</h2><p>Words are runs of letters, digits and apostrophes, lower-cased; duplicates are "
            "exact (after trimming whitespace).</p>" + _table(["", *labels], rows) + "".join(figures))


def _throughput(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    parts = ["<h2>Stage wall time and throughput</h2><p>Stages run fused and concurrently, so each stage's window "
             "is when its persisted results appeared (first to last), from the manifest; results are one per "
             "source, one per clip for stages that handle clips.</p>"]
    for run, label in zip(runs, labels):
        t = run["throughput"]
        if not t["recorded"]:
            parts.append(f"<p class=\"note\">{_e(label)}: {_e(t['note'])}</p>")
            continue
        rows = [[stage, e.get("results"), e.get("first"), e.get("last"), e.get("seconds"), e.get("results_per_s")]
                for stage, e in t["stages"].items()]
        rows.append(["whole run", None, None, None, t["wall_s"], None])
        parts.append(f"<h3>{_e(label)}</h3>" + _table(
            ["stage", "results", "first", "last", "wall s", "results / s"], rows)
            + f"<p>{_fmt(t['clip_seconds_per_s'])} seconds of clips per wall-clock second.</p>")
    return "".join(parts)


def _reference(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    ours = [our_figures(r) for r in runs]
    names = {"clips": "clips", "source_videos": "source videos", "mean_duration_s": "mean clip duration (s)",
             "hours": "hours", "mean_caption_words": "mean caption length (words)",
             "hd_share": "share ≥ 720p", "widescreen_share": "share 16:9", "resolution": "resolution",
             "captions": "captions by"}
    refs = list(REFERENCES)
    shown = [{k: _percent(v) if k.endswith("_share") else v for k, v in o.items()} for o in ours]
    rows = [[title, *[o.get(key) for o in shown], *[REFERENCES[r].get(key) for r in refs]]
            for key, title in names.items()]
    sources = "".join(f"<li><b>{_e(r)}</b>, {_e(names.get(k, k))}: {_e(src)}</li>"
                      for r in refs for k, src in REFERENCES[r]["sources"].items())
    return ("<h2>Beside the published corpora</h2><p>— : not published by the source (left out rather than "
            "estimated) or not measured here.</p>" + _table(["", *labels, *refs], rows)
            + f"<p>Sources:</p><ul>{sources}</ul>")


def _gallery(galleries: Sequence[Gallery], labels: Sequence[str]) -> str:
    parts = ["<h2>Gallery</h2><p>Evenly spaced frames of sample clips: kept clips (the first clip of shards spread "
             "over the corpus) with their filter checks, and per rejection reason the rejected clips (or scenes) of "
             "the lowest source ids (an unbiased sample: ids are a hash of the source) with the rejection's detail, "
             "their frames from the clip file while the work area keeps it, else from the span of a local source."
             "</p>"]
    for gallery, label in zip(galleries, labels):
        if len(galleries) > 1:
            parts.append(f"<h3>{_e(label)}</h3>")
        parts.append(f"<h3>Kept clips ({len(gallery.kept)} shown)</h3>")
        parts.append("".join(_thumb(t, "kept") for t in gallery.kept) or "<p class=\"note\">no clips in shards</p>")
        parts.append("<h3>Rejected clips by reason</h3>")
        if not gallery.rejected:
            parts.append("<p class=\"note\">no clip was rejected</p>")
        for sample in gallery.rejected:
            parts.append(f"<h4 data-reason=\"{_e(sample.reason)}\">{_e(sample.reason)}: {sample.rejected:,} "
                         f"clip{'s' if sample.rejected != 1 else ''} rejected, {len(sample.thumbs)} sampled</h4>")
            if sample.note:
                parts.append(f"<p class=\"note\" data-no-media=\"{_e(sample.reason)}\">no pictures: {_e(sample.note)}"
                             "</p>")
            parts.append("".join(_thumb(t, sample.reason) for t in sample.thumbs if t.strip or not sample.note))
        if gallery.whole:
            whole = "; ".join(f"{reason}: {n:,}" for reason, n in gallery.whole.items())
            parts.append(f"<p class=\"note\">Sources rejected whole (no clip or scene to show): {_e(whole)}.</p>")
    return "".join(parts)


def _thumb(thumb: Thumb, group: str) -> str:
    picture = (f"<img src=\"{thumb.strip}\" alt=\"{_e(thumb.key)}\" data-gallery=\"{_e(group)}\">" if thumb.strip
               else f"<p class=\"note\">{_e(thumb.note or 'no picture')}</p>")
    checks = " · ".join(f"<span class=\"{'pass' if passed else 'fail'}\">{_e(rule)} {_e(_fmt(score))} "
                        f"(threshold {_e(_fmt(threshold))}{'' if passed else ', failed'})</span>"
                        for rule, score, threshold, passed in thumb.checks)
    text = "".join(f"<br>{part}" for part in (_e(thumb.caption) if thumb.caption else "", checks,
                                               _e(thumb.detail) if thumb.detail else "",
                                               f"<i>frames from the {_e(thumb.origin)}</i>" if thumb.origin else "")
                   if part)
    return f"<figure class=\"thumb\">{picture}<figcaption><b>{_e(thumb.key)}</b>{text}</figcaption></figure>"


# --- HTML helpers ---------------------------------------------------------------------------------

def _e(text: Any) -> str:
    return html.escape(str(text))


def _fmt(value: Any) -> str:
    """Numbers for people: thousands separators, 3 significant digits for fractions, — for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 100:
        value = round(value, 1)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"n\">{_e(_fmt(v))}</td>" if isinstance(v, int | float) or v is None
                         else f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(uri: str, name: str, wide: bool = False) -> str:
    style = " style=\"width:98%\"" if wide else ""
    return f"<figure{style}><img src=\"{uri}\" alt=\"{_e(name)}\" data-figure=\"{_e(name)}\"></figure>"
