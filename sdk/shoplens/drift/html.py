"""``shoplens drift --html``: one self-contained page (inline SVG and CSS, no scripts, no fetches).

It shows the verdict and likely cause, the metrics table, a per-class bar chart of the accuracy
deltas, both confusion matrices as heatmaps, the cause analysis and the disagreeing ids.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING, Any

from shoplens.drift.report import gate_limits, label_name

if TYPE_CHECKING:
    from shoplens.data.datasets import Dataset

__all__ = ["disagreeing_thumbnails", "render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2430;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:2rem 0 .6rem;border-bottom:1px solid #dde2ea}
.verdict{padding:.8rem 1rem;border-radius:6px;font-weight:600;margin:1rem 0}
.pass{background:#e4f5e8;color:#17602d}.fail{background:#fdeaea;color:#8a1c1c}
.cause{background:#f3f5f9;border-left:4px solid #5b7bd5;padding:.6rem 1rem;margin:.5rem 0}
table{border-collapse:collapse;margin:.4rem 0}td,th{padding:.25rem .7rem;border-bottom:1px solid #e8ebf0;
text-align:right}th:first-child,td:first-child{text-align:left}.muted{color:#687385}
.grid{display:flex;flex-wrap:wrap;gap:2rem}code{background:#f3f5f9;padding:0 .25rem;border-radius:3px}
.limits{font-weight:400;font-size:.9rem}.thumbs{display:flex;flex-wrap:wrap;gap:.6rem}
.thumbs figure{margin:0;text-align:center;font-size:.75rem}.thumbs img{width:72px;height:72px;
image-rendering:pixelated;border:1px solid #dde2ea;border-radius:4px;object-fit:contain;background:#000}
"""


def disagreeing_thumbnails(dataset: Dataset, ids: Iterable[str], *, limit: int = 24) -> dict[str, str]:
    """PNG data URIs of the first ``limit`` disagreeing images, read back from ``dataset`` (one
    pass at most, stopping once all are found); an id the data no longer yields is left out."""
    import cv2

    wanted = {str(i) for i in list(ids)[:limit]}
    out: dict[str, str] = {}
    if not wanted:
        return out
    for batch in dataset.batches(256):
        for img, i in zip(batch.images, batch.ids, strict=True):
            if i in wanted and img is not None:
                ok, png = cv2.imencode(".png", cv2.resize(img, (72, 72), interpolation=cv2.INTER_AREA)
                                       if max(img.shape[:2]) > 144 else img)  # fmt: skip
                if ok:
                    out[i] = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()
        if len(out) == len(wanted):
            break
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _heat(matrix: list[list[int]], labels: list[str], title: str) -> str:
    k = len(labels)
    cell = 34 if k <= 12 else max(12, 400 // k)
    left, top = 120, 28
    size = cell * k
    rows_sum = [max(sum(r), 1) for r in matrix]
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" class="heatmap" width="{left + size + 70}" '
        f'height="{top + size + 110}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
        f'<text x="{left}" y="16" font-weight="600">{escape(title)}</text>',
    ]
    for i, row in enumerate(matrix):
        y = top + i * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{escape(labels[i])}</text>'
        )
        for j, v in enumerate(row):
            frac = v / rows_sum[i]
            # white -> blue on the diagonal, white -> red off it
            if i == j:
                color = f"rgb({int(255 - 200 * frac)},{int(255 - 140 * frac)},255)"
            else:
                color = (
                    f"rgb(255,{int(255 - 215 * min(1.0, 3 * frac))},{int(255 - 215 * min(1.0, 3 * frac))})"
                )
            x = left + j * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{color}">'
                f"<title>true {escape(labels[i])}, predicted {escape(labels[j])}: {v}</title></rect>"
            )
            if cell >= 26 and v:
                parts.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle">{v}</text>'
                )
    for j, name in enumerate(labels):
        cx = left + j * cell + cell / 2
        parts.append(
            f'<text x="{cx}" y="{top + size + 8}" transform="rotate(55 {cx} {top + size + 8})">'
            f"{escape(name)}</text>"
        )
    parts.append(f'<text x="{left + size / 2}" y="{top + size + 105}" text-anchor="middle" class="muted">'
                 "predicted (rows: true class)</text></svg>")  # fmt: skip
    return "".join(parts)


def _bars(per_class: list[dict[str, Any]]) -> str:
    rows = sorted(per_class, key=lambda r: r["index"])
    width, bar_h, left = 680, 22, 110
    mid = left + (width - left) / 2
    span = max([abs(r["delta_pts"]) for r in rows] + [1.0])
    scale = ((width - left) / 2 - 60) / span  # room for the value text beside the longest bar
    h = 30 + bar_h * len(rows)
    parts = [
        f'<svg role="img" aria-label="per-class accuracy delta" class="bars" width="{width + 70}" '
        f'height="{h + 20}" '
        'xmlns="http://www.w3.org/2000/svg" font-size="11">',
        f'<text x="{left}" y="14" font-weight="600">'
        "top-1 drop per class (points; red, to the right: candidate worse)</text>",
        f'<line x1="{mid}" y1="22" x2="{mid}" y2="{h}" stroke="#888"/>',
    ]
    for i, r in enumerate(rows):
        y = 26 + i * bar_h
        d = float(r["delta_pts"])  # the drop: positive (red, right) when the candidate is worse
        w = abs(d) * scale
        x = mid if d >= 0 else mid - w
        color = "#d0463c" if d > 0 else "#3a9a5b"
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(str(r["label"]))}</text>')
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{bar_h - 6}" fill="{color}">'
            f"<title>{escape(str(r['label']))}: {d:+.2f} pts</title></rect>"
        )
        tx = x + w + 4 if d >= 0 else x - 4
        anchor = "start" if d >= 0 else "end"
        parts.append(f'<text x="{tx:.1f}" y="{y + 14}" text-anchor="{anchor}">{d:+.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(d: dict[str, Any], thumbnails: dict[str, str] | None = None) -> str:
    """The drift report (``DriftReport.to_dict()``) as a self-contained HTML page; ``thumbnails``
    (id -> data URI, :func:`disagreeing_thumbnails`) shows the disagreeing images themselves."""
    gate = d.get("gate") or {}
    passed = gate.get("passed", True)
    verdict = "PASS" if passed else "FAIL"
    verdict_class = "pass" if passed else "fail"
    failures = "".join(f"<li>{escape(f)}</li>" for f in gate.get("failures", []))
    failure_list = f"<ul>{failures}</ul>" if failures else ""
    metrics = [
        ("top-1", _pct(d["reference_top1"]), _pct(d["candidate_top1"]), f"{d['drop_pts']:.2f} pts"),
        ("top-5", _pct(d["reference_top5"]), _pct(d["candidate_top5"]),
         f"{100 * (d['reference_top5'] - d['candidate_top5']):.2f} pts"),
    ]  # fmt: skip
    mrows = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td><td>{e}</td></tr>" for a, b, c, e in metrics)
    lo, hi = d["drop_ci95_pts"]
    extra = [
        ("top-1 drop (95 % CI, paired bootstrap)", f"{d['drop_pts']:.2f} pts ({lo:.2f} .. {hi:.2f})"),
        ("top-1 agreement", _pct(d["agreement"])),
        ("mean KL divergence (reference || candidate)", f"{d['kl_mean']:.5f}"),
        ("mean / max |score delta|", f"{d['abs_score_delta_mean']:.5f} / {d['abs_score_delta_max']:.5f}"),
        ("disagreeing images", f"{d['disagreeing_total']} of {d['n']}"),
    ]
    erows = "".join(f"<tr><td>{escape(a)}</td><td>{escape(b)}</td></tr>" for a, b in extra)
    pc = "".join(
        "<tr><td>{label}</td><td>{support}</td><td>{ra}</td><td>{ca}</td><td>{dp:.2f}</td>"
        "<td>{rp:.3f} / {rr:.3f} / {rf:.3f}</td><td>{cp:.3f} / {cr:.3f} / {cf:.3f}</td></tr>".format(
            label=escape(str(r["label"])),
            support=r["support"],
            ra="-" if r["reference_accuracy"] is None else _pct(r["reference_accuracy"]),
            ca="-" if r["candidate_accuracy"] is None else _pct(r["candidate_accuracy"]),
            dp=r["delta_pts"],
            rp=r["reference"]["precision"],
            rr=r["reference"]["recall"],
            rf=r["reference"]["f1"],
            cp=r["candidate"]["precision"],
            cr=r["candidate"]["recall"],
            cf=r["candidate"]["f1"],
        )
        for r in d["per_class"]
    )
    ca = d.get("cause_analysis") or {}
    alts = "".join(
        f"<tr><td>{escape(a['description'])}</td><td>{_pct(a['agreement'])}</td>"
        f"<td>{a['mean_abs_score_delta']:.4f}</td></tr>"
        for a in ca.get("alternatives", [])
    )
    cause_table = (
        f"<p class='muted'>The reference re-run on {ca.get('sample', 0)} images with each common mistake; "
        f"with its own contract it agrees {_pct(ca.get('baseline_agreement', 1.0))} with the candidate.</p>"
        "<table><tr><th>reference fed with</th><th>agreement with candidate</th>"
        "<th>mean |score delta|</th></tr>"
        f"{alts}</table>"
        if alts
        else "<p class='muted'>Not needed: the candidate agrees with the reference (or collapsed).</p>"
    )
    frames = ""
    if d.get("per_frame"):
        fr = "".join(
            f"<tr><td>{escape(f['id'])}</td><td>{escape(label_name(d['labels'], f['reference_top1']))}</td>"
            f"<td>{escape(label_name(d['labels'], f['candidate_top1']))}</td>"
            f"<td>{f['max_abs_delta']:.4f}</td><td>{'ok' if f['ok'] else 'DIFFERS'}</td></tr>"
            for f in d["per_frame"]
        )
        frames = (
            "<h2>Per frame</h2><table><tr><th>frame</th><th>reference top-1</th><th>device top-1</th>"
            f"<th>max |score delta|</th><th></th></tr>{fr}</table>"
        )
    ids = ", ".join(escape(str(i)) for i in d["disagreeing_ids"][:200])
    more = d["disagreeing_total"] - min(200, len(d["disagreeing_ids"]))
    labels = d["labels"]
    thumbs = "".join(
        f'<figure><img src="{uri}" alt="{escape(i)}"><figcaption>{escape(i)}</figcaption></figure>'
        for i, uri in (thumbnails or {}).items()
    )
    thumbs = f'<div class="thumbs" id="thumbnails">{thumbs}</div>' if thumbs else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ShopLens drift: {escape(d["candidate"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>Accuracy drift: <code>{escape(d["candidate"])}</code> vs <code>{escape(d["reference"])}</code></h1>
<div class="muted">{d["n"]} images from <code>{escape(d["data"])}</code>, {d["seconds"]} s</div>
<div id="verdict" class="verdict {verdict_class}">{verdict}
<span id="limits" class="limits">({escape(gate_limits(gate))})</span>{failure_list}</div>
<div class="cause"><b>Likely cause:</b> <span id="likely-cause">{escape(d["likely_cause"])}</span></div>
<h2>Metrics</h2>
<table id="metrics"><tr><th></th><th>reference</th><th>candidate</th><th>drop</th></tr>{mrows}</table>
<table>{erows}</table>
<h2>Per class</h2>
{_bars(d["per_class"])}
<table id="per-class"><tr><th>class</th><th>images</th><th>reference</th><th>candidate</th>
<th>drop (pts)</th><th>reference P / R / F1</th><th>candidate P / R / F1</th></tr>{pc}</table>
<h2>Confusion matrices</h2>
<div class="grid">{_heat(d["reference_confusion"], labels, "reference")}
{_heat(d["candidate_confusion"], labels, "candidate")}</div>
<h2>Likely-cause analysis</h2>
{cause_table}
{frames}
<h2>Disagreeing images</h2>
{thumbs}
<p>{ids or "none"}{f" and {more} more (all in the JSON report)" if more > 0 else ""}</p>
</body></html>
"""
