"""Self-contained HTML pages over what a run wrote: `index.html` for `hfrel explain`, `report.html` for
`hfrel evaluate`.

Each page is rendered from the run's records alone (summary.json, report.json), never from what one
process happened to compute, so reruns and multi-process runs give the same bytes. The pages inline
their CSS and JavaScript, fetch nothing, and link the run's PNGs by relative paths: the output
folder can be moved, zipped or served as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

INDEX_PAGE = "index.html"
REPORT_PAGE = "report.html"

_STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --card: #ffffff; --page: #f6f8fa;
  --accent: #0969da; --bar: #54aeff; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--page); }
header { padding: 18px 28px 12px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 10px; }
.meta { color: var(--muted); margin: 0; }
.meta code, td code, li code { font-size: 12.5px; }
main { padding: 8px 28px 40px; }
.controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: end; margin: 14px 0 6px; }
.controls label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 3px; }
.controls select, .controls input { font: inherit; padding: 5px 8px; border: 1px solid var(--line);
  border-radius: 6px; background: var(--card); min-width: 180px; }
#shown { color: var(--muted); padding-bottom: 6px; }
.cards { display: flex; flex-direction: column; gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
  display: grid; grid-template-columns: 250px 1fr; gap: 18px; }
.card h3 { margin: 0 0 2px; font-size: 15px; word-break: break-all; }
.card .source { color: var(--muted); font-size: 12px; word-break: break-all; margin: 0 0 10px; }
.top { width: 100%; border-collapse: collapse; font-size: 12.5px; }
.top td { padding: 2px 0; vertical-align: middle; }
.top td.name { width: 45%; padding-right: 6px; overflow-wrap: anywhere; }
.top td.p { width: 52px; text-align: right; color: var(--muted); font-variant-numeric: tabular-nums; }
.track { background: #eaeef2; border-radius: 3px; height: 8px; }
.fill { background: var(--bar); border-radius: 3px; height: 8px; }
.links { margin-top: 10px; font-size: 12.5px; }
.links a { color: var(--accent); margin-right: 12px; }
.maps { display: flex; flex-wrap: wrap; gap: 12px; align-content: flex-start; }
figure { margin: 0; width: 164px; }
figure img { width: 164px; height: auto; display: block; border-radius: 6px; border: 1px solid var(--line); }
figcaption { font-size: 12px; margin-top: 4px; line-height: 1.3; }
figcaption .method { color: var(--muted); }
.hidden { display: none !important; }
.skipped li { margin: 4px 0; }
.skipped .why { color: var(--bad); }
.empty { color: var(--muted); }
table.scores { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); }
table.scores th, table.scores td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right;
  font-variant-numeric: tabular-nums; }
table.scores th { font-size: 12px; color: var(--muted); font-weight: 600; vertical-align: bottom; }
table.scores th:first-child, table.scores td:first-child { text-align: left; }
table.scores td.best { font-weight: 700; color: var(--accent); }
img.plot { max-width: 100%; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
@media (max-width: 700px) { .card { grid-template-columns: 1fr; } }
"""

# Shows an image card when a map in it matches every filter; hides maps that do not match.
_FILTER_SCRIPT = """
(function () {
  var cls = document.getElementById('class-filter');
  var method = document.getElementById('method-filter');
  var name = document.getElementById('name-filter');
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var shown = document.getElementById('shown');
  function apply() {
    var wantClass = cls.value, wantMethod = method.value, wantName = name.value.trim().toLowerCase();
    var visible = 0;
    cards.forEach(function (card) {
      var any = false;
      card.querySelectorAll('figure').forEach(function (figure) {
        var match = (!wantClass || figure.dataset.label === wantClass) &&
                    (!wantMethod || figure.dataset.method === wantMethod);
        figure.classList.toggle('hidden', !match);
        any = any || match;
      });
      var named = !wantName || card.dataset.name.toLowerCase().indexOf(wantName) >= 0;
      card.classList.toggle('hidden', !(any && named));
      if (any && named) { visible += 1; }
    });
    shown.textContent = 'showing ' + visible + ' of ' + cards.length + ' image' + (cards.length === 1 ? '' : 's');
  }
  [cls, method].forEach(function (control) { control.addEventListener('change', apply); });
  name.addEventListener('input', apply);
  apply();
})();
"""


def _text(value: Any) -> str:
    return escape(str(value), quote=True)


def _link(path: str) -> str:
    """A relative link to one of the run's files, escaped for an attribute (file names may hold anything)."""
    return escape(quote(path.replace(os.sep, "/")), quote=True)


def _page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n{tail}</body>\n</html>\n"
    )


def _write_page(path: Path, text: str) -> Path:
    """Write a page whole or not at all (a temporary file renamed into place); a page that would not
    change is left as it is, so a rerun that changes nothing touches no file but the run's records."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


# index.html ---------------------------------------------------------------------------------------


def index_page(summary: dict[str, Any]) -> str:
    """The page for one `hfrel explain` output folder, from its summary.json (paths relative to it)."""
    images = [record for record in summary["images"] if record["status"] == "ok"]
    classes: dict[int, str] = {}
    for record in images:
        for entry in record["explained"]:
            classes.setdefault(entry["index"], entry["label"])
    methods = list(summary["methods"])
    failed = summary["failed"]
    if summary["labels"]:
        asked = ", ".join(f"{_text(c['label'])} ({c['index']})" for c in summary["labels"])
    elif summary.get("label_column"):
        asked = f"each example's <code>{_text(summary['label_column'])}</code> column"
    else:
        asked = "each image's predicted class"
    header = (
        "<header>\n<h1>hfrel explain</h1>\n"
        f'<p class="meta">model <code>{_text(summary["model"])}</code> · {summary["explained"]} image'
        f"{'s' * (summary['explained'] != 1)} explained, {len(failed)} skipped · classes: {asked} · methods: "
        f"{_text(', '.join(methods))} · start layer {summary['start_layer']} · hfrel {_text(summary['hfrel'])}</p>\n"
        "</header>"
    )
    class_options = "".join(
        f'<option value="{index}">{_text(name)} ({index})</option>' for index, name in sorted(classes.items())
    )
    method_options = "".join(f'<option value="{_text(m)}">{_text(m)}</option>' for m in methods)
    controls = (
        '<div class="controls">\n'
        f'<label>class<select id="class-filter"><option value="">all classes</option>{class_options}</select></label>\n'
        f'<label>method<select id="method-filter"><option value="">all methods</option>{method_options}'
        "</select></label>\n"
        '<label>image name<input id="name-filter" type="search" placeholder="filter by name"></label>\n'
        '<span id="shown"></span>\n</div>'
    )
    cards = "\n".join(_card(record, methods) for record in images)
    if not images:
        cards = '<p class="empty">No image could be explained; see the skipped inputs below.</p>'
    skipped = '<p class="empty">none</p>'
    if failed:
        rows = "".join(
            f'<li><code>{_text(item["input"])}</code>: <span class="why">{_text(item["error"])}</span></li>'
            for item in failed
        )
        skipped = f'<ul class="skipped">{rows}</ul>'
    body = (
        f'{header}\n<main>\n{controls}\n<section class="cards">\n{cards}\n</section>\n'
        f'<h2 id="skipped">Skipped inputs ({len(failed)})</h2>\n{skipped}\n'
        '<p class="meta">Written by <code>hfrel explain</code> from summary.json; every file lies next to this page.'
        "</p>\n</main>"
    )
    return _page("hfrel explain: " + str(summary["model"]), body, _FILTER_SCRIPT)


def _card(record: dict[str, Any], methods: Sequence[str]) -> str:
    size = record["size"]
    bars = "".join(
        f'<tr><td class="name">{_text(p["label"])} ({p["index"]})</td>'
        f'<td><div class="track"><div class="fill" style="width:{100 * p["probability"]:.1f}%"></div></div></td>'
        f'<td class="p">{p["probability"]:.1%}</td></tr>'
        for p in record["predictions"]
    )
    probability = {entry["index"]: entry["probability"] for entry in record["explained"]}
    names = {entry["index"]: entry["label"] for entry in record["explained"]}
    order = {method: i for i, method in enumerate(methods)}
    overlays = sorted(record["files"]["overlays"], key=lambda o: (list(names).index(o["label"]), order[o["method"]]))
    figures = "".join(
        f'<figure data-label="{o["label"]}" data-method="{_text(o["method"])}">'
        f'<a href="{_link(o.get("original", o["file"]))}"><img src="{_link(o["file"])}" loading="lazy" '
        f'alt="{_text(names[o["label"]])}, {_text(o["method"])}"></a>'
        f"<figcaption>{_text(names[o['label']])} ({o['label']}) · {probability[o['label']]:.1%}<br>"
        f'<span class="method">{_text(o["method"])}</span></figcaption></figure>'
        for o in overlays
    )
    files = record["files"]
    return (
        f'<article class="card" id="image-{_text(record["name"])}" data-name="{_text(record["name"])}">\n'
        f"<div><h3>{_text(record['name'])}</h3>"
        f'<p class="source">{_text(record["input"])} · {size["width"]}x{size["height"]}</p>'
        f'<table class="top">{bars}</table>'
        f'<div class="links"><a href="{_link(files["panel"])}">panel</a>'
        f'<a href="{_link(files["maps"])}">maps.npz</a></div></div>\n'
        f'<div class="maps">{figures}</div>\n</article>'
    )


def write_index(out: str | Path) -> Path:
    """Rewrite `out/index.html` from `out/summary.json` (the main process calls this as a run ends)."""
    folder = Path(out)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return _write_page(folder / INDEX_PAGE, index_page(summary))


# report.html --------------------------------------------------------------------------------------


def report_page(report: dict[str, Any], columns: Sequence[tuple[str, str]], description: str, plot: str | None) -> str:
    """The page for one `hfrel evaluate` report: what was measured, the table (best value per column
    in bold), the perturbation curves (`plot`, a relative path) and the skipped items."""
    methods = report["methods"]
    best: dict[str, float] = {}
    for key, title in columns:
        values = [v[key] for v in methods.values() if v.get(key) is not None]
        if values:
            best[key] = min(values) if "lower is better" in title else max(values)
    head = "".join(f"<th>{_text(title)}</th>" for _, title in columns)
    rows = []
    for method, values in methods.items():
        cells = []
        for key, _ in columns:
            value = values.get(key)
            if value is None:
                cells.append("<td>n/a</td>")
            else:
                mark = ' class="best"' if len(methods) > 1 and value == best.get(key) else ""
                cells.append(f"<td{mark}>{value:.2f}</td>")
        rows.append(f"<tr><td><code>{_text(method)}</code></td>{''.join(cells)}</tr>")
    table = f'<table class="scores"><tr><th>method</th>{head}</tr>{"".join(rows)}</table>'
    picture = ""
    if plot is not None:
        picture = (
            "<h2>Perturbation tests</h2>\n"
            f'<img class="plot" src="{_link(plot)}" alt="top-1 accuracy against the fraction of pixels removed">'
        )
    skipped = report["skipped"]
    listed = '<p class="empty">none</p>'
    if skipped:
        items = "".join(
            f'<li><code>{_text(s["item"])}</code>: <span class="why">{_text(s["reason"])}</span></li>' for s in skipped
        )
        listed = f'<ul class="skipped">{items}</ul>'
    body = (
        "<header>\n<h1>hfrel evaluate</h1>\n"
        f'<p class="meta">{_text(description)}</p>\n</header>\n<main>\n<h2>Scores (percent)</h2>\n{table}\n'
        f'{picture}\n<h2 id="skipped">Skipped items ({len(skipped)})</h2>\n{listed}\n'
        '<p class="meta">Written by <code>hfrel evaluate</code> from report.json, next to this page.</p>\n</main>'
    )
    return _page(f"hfrel evaluate: {report['model']}", body)
