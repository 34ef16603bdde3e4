"""A self-contained HTML report: metrics table (best per column marked) and base-vs-edited grids."""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from erasekit.core import files
from erasekit.eval.metric_registry import METRICS

KEY_ORDER = ["target_rate", "target_rate_base", "synonym_rate", "misspelling_rate", "paraphrase_rate",
             "implicit_rate", "implicit_rate_base", "anchor_rate", "other_accuracy", "other_accuracy_base",
             "ssim_other", "ssim_target", "recovery_rate", "seconds"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse}
td small{color:#666;font-size:80%;display:block}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.name{text-align:left}
td.best{font-weight:bold;background:#e6f4e6}
img{image-rendering:pixelated;max-width:100%;border:1px solid #ddd}
figure{margin:1em 0} figcaption{font-size:90%;color:#555}
"""


# After loading, the page records how many images it has and how many failed to render, and says so.
SELF_CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0));
  document.body.dataset.images = images.length;
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  document.body.dataset.visibleColumns = [...document.querySelectorAll('#metrics th')].filter(shown).length;
  document.body.dataset.plots = [...document.querySelectorAll('svg.tradeoff')].filter(shown).length;
  document.body.dataset.brokenImages = broken.length;
  if (broken.length) document.body.insertAdjacentHTML('afterbegin',
    `<p style="color:#b00">${broken.length} image(s) failed to load</p>`);
});
</script>"""


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    width = "" if path.stat().st_size > 20000 else ' style="width:100%;max-width:900px"'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{width}>'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def _interval(run: dict[str, Any], key: str) -> list[float] | None:
    ci = ((run.get("details") or {}).get(key) or {})
    return ci.get("ci95") if isinstance(ci, dict) else None


def tradeoff_svg(runs: Sequence[dict[str, Any]], width: int = 460, height: int = 320,
                 bars: str = "95% intervals", rate: str = "target_rate", rate_text: str = "↓ erased") -> str:
    """Erasure against preservation, one point per run: a rate (default target_rate; lower: more erased)
    over ssim_other (higher: more kept), the rate's 95% interval as a bar. Empty when no run has both."""
    points = [r for r in runs if isinstance(r["metrics"].get(rate), (int, float))
              and isinstance(r["metrics"].get("ssim_other"), (int, float))]
    if not points:
        return ""
    pad = 40
    xs = [r["metrics"]["ssim_other"] for r in points]
    x0, x1 = min(0.5, min(xs)), 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return (pad + (width - 2 * pad) * (x - x0) / max(x1 - x0, 1e-9),
                height - pad - (height - 2 * pad) * min(max(y, 0.0), 1.0))

    total = height + 14 * len(points)
    # xmlns: the same picture also stands alone as an .svg file (the README's Table-1 plot)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="tradeoff" width="{width}" height="{total}" '
             'role="img" aria-label="erasure against preservation" font-family="sans-serif">',
             f'<rect width="{width}" height="{total}" fill="white"/>',
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" '
             'stroke="#ccc"/>',
             f'<text x="{pad}" y="{pad - 10}" font-size="12">{html.escape(rate)} ({rate_text}) against ssim_other '
             f'(→ kept), {html.escape(bars)}</text>',
             f'<text x="{pad - 22}" y="{height - pad + 4}" font-size="11">0</text>',
             f'<text x="{pad - 22}" y="{pad + 4}" font-size="11">1</text>',
             f'<text x="{pad}" y="{height - pad + 16}" font-size="11">{x0:.2f}</text>',
             f'<text x="{width - pad - 20}" y="{height - pad + 16}" font-size="11">1.00</text>']
    for i, run in enumerate(points):
        colour = PALETTE[i % len(PALETTE)]
        x, y = xy(run["metrics"]["ssim_other"], run["metrics"][rate])
        ci = _interval(run, rate)
        if ci and all(isinstance(v, (int, float)) and not math.isnan(v) for v in ci):
            (_, y_lo), (_, y_hi) = xy(0, ci[0]), xy(0, ci[1])
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_lo:.1f}" y2="{y_hi:.1f}" stroke="{colour}"/>')
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{html.escape(run["name"])}'
                     '</title></circle>')
        parts.append(f'<text x="{pad}" y="{height + 12 * i}" font-size="11" fill="{colour}">'
                     f'● {html.escape(run["name"])}</text>')
    return "".join(parts) + "</svg>"


PALETTE = ("#2a6", "#c33", "#36c", "#e90", "#939", "#0aa", "#777", "#a52")


def _curve_svg(series: list[tuple[str, list[dict[str, Any]]]], key: str, width: int = 420,
               height: int = 200) -> str:
    """One line chart of `key` over training steps, a line per (name, points) series, with a legend
    (values in [0, 1] assumed, as rates and SSIM are)."""
    lines = [(name, [(p["step"], p[key]) for p in points if isinstance(p.get(key), (int, float))])
             for name, points in series]
    lines = [(name, pts) for name, pts in lines if len(pts) >= 2]
    if not lines:
        return ""
    x0 = min(pts[0][0] for _, pts in lines)
    x1 = max(pts[-1][0] for _, pts in lines)
    pad = 30

    def xy(step: float, value: float) -> str:
        x = pad + (width - 2 * pad) * (step - x0) / max(x1 - x0, 1)
        y = height - pad - (height - 2 * pad) * min(max(value, 0.0), 1.0)
        return f"{x:.1f},{y:.1f}"

    legend_height = 14 * len(lines)
    parts = [f'<svg class="curve" width="{width}" height="{height + legend_height}" role="img" '
             f'aria-label="{html.escape(key)}">',
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" '
             'stroke="#ccc"/>',
             f'<text x="{pad}" y="{pad - 8}" font-size="12">{html.escape(key)} (0–1) over steps {x0}–{x1}</text>']
    for i, (name, pts) in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<polyline points="{" ".join(xy(s, v) for s, v in pts)}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        parts.append(f'<text x="{pad}" y="{height + 12 * i}" font-size="11" fill="{colour}">'
                     f'{html.escape(name)}</text>')
    return "".join(parts) + "</svg>"


def render_report(runs: Sequence[dict[str, Any]], out_path: str | os.PathLike, title: str = "erasekit report") -> Path:
    """runs: dicts with 'name', 'metrics', optionally 'grids' ({group: png path}), 'timeline'
    ([{step, metric: value}, ...], drawn as curves) and 'group' (runs of one group share a chart)."""
    # Every registered metric a run measured reaches the table: the usual ones first, then the rest.
    order = KEY_ORDER + [k for k in METRICS if k not in KEY_ORDER]
    keys = [k for k in order if any(k in r["metrics"] for r in runs)]
    best: dict[str, float] = {}
    for key in keys:
        direction = METRICS[key].higher_is_better if key in METRICS else None
        values = [r["metrics"][key] for r in runs if isinstance(r["metrics"].get(key), (int, float))]
        if direction is not None and values and len(runs) > 1:
            best[key] = max(values) if direction else min(values)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    rows = []
    for run in runs:
        cells = []
        for key in keys:
            value = run["metrics"].get(key, float("nan"))
            mark = ' class="best"' if key in best and value == best[key] else ""
            ci = _interval(run, key)
            small = f"<small>[{ci[0]:.2f}, {ci[1]:.2f}]</small>" if ci and not any(map(math.isnan, ci)) else ""
            cells.append(f"<td{mark}>{_fmt(value)}{small}</td>")
        rows.append(f'<tr><td class="name">{html.escape(run["name"])}</td>{"".join(cells)}</tr>')
    plot = tradeoff_svg(runs)
    figures = [f"<figure>{plot}<figcaption>erasure against preservation: one point per run (bottom right is "
               "best)</figcaption></figure>"] if plot else []
    # Timelines overlaid per group (a benchmark case): All-but-One's Fig. 4, one line per run.
    timed = [r for r in runs if r.get("timeline")]
    for group in dict.fromkeys(r.get("group", "") for r in timed):
        series = [(r["name"], r["timeline"]) for r in timed if r.get("group", "") == group]
        metric_keys = sorted({k for _, points in series for p in points for k in p if k != "step"})
        charts = "".join(_curve_svg(series, k) for k in metric_keys)
        if charts:
            caption = f"during training{f' ({group})' if group else ''}: one line per run"
            figures.append(f"<figure>{charts}<figcaption>{html.escape(caption)}</figcaption></figure>")
    for run in runs:
        for group, path in (run.get("grids") or {}).items():
            caption = f"{run['name']} — {group} prompts: base model (upper rows) vs edited (lower rows), same seeds"
            figures.append(f"<figure>{_img_tag(Path(path), caption)}<figcaption>{html.escape(caption)}</figcaption>"
                           "</figure>")
    legend = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(METRICS[k].description)}</li>" for k in keys if k in METRICS)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style>{SELF_CHECK}</head><body><h1>{html.escape(title)}</h1>"
            f"<div class='scroll'><table id='metrics'><tr><th>run</th>{head}</tr>{''.join(rows)}</table></div>"
            f"<ul>{legend}</ul>"
            f"{''.join(figures)}</body></html>")
    return files.write_text(out_path, page)


def runs_from_result_files(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Runs from `erasekit eval` results.json files (with their grids) or benchmark documents."""
    runs = []
    for path in paths:
        path = Path(path)
        doc = json.loads(path.read_text())
        if "runs" in doc:  # a benchmark document
            for i, run in enumerate(doc["runs"]):
                who = run.get("label") or run.get("method") or ""
                name = f"{doc['benchmark']}#{i} {who} {run.get('case', '')}".strip()
                runs.append({"name": name, "metrics": run["metrics"], "timeline": run.get("timeline"),
                             "group": run.get("case", ""), "details": run.get("details")})
        else:
            grids = {p.stem: p for p in sorted((path.parent / "grids").glob("*.png"))}
            runs.append({"name": path.parent.name, "metrics": doc["metrics"], "grids": grids,
                         "details": doc.get("details")})
    return runs
