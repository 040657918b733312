#!/usr/bin/env python3
"""Draws uvt-bench --json output as an SVG bar chart of speedups.

    python3 bench/chart.py results.json bench/results.svg

One horizontal bar per scenario: how many times better uvthreads is than the
baseline measured in the same run (log scale; the line marks 1x, parity).
"""
import json
import math
import sys
from xml.sax.saxutils import escape


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        data = json.load(f)
    rows = [r for r in data["results"] if "speedup" in r]
    if not rows:
        print("no results with a speedup", file=sys.stderr)
        return 1

    label_w, bar_w, row_h, top = 230, 520, 24, 50
    lo = min(0.1, min(r["speedup"] for r in rows))
    hi = max(10.0, max(r["speedup"] for r in rows))
    lmin, lmax = math.log10(lo), math.log10(hi)

    def x_of(v: float) -> float:
        return label_w + (math.log10(v) - lmin) / (lmax - lmin) * bar_w

    height = top + row_h * len(rows) + 40
    width = label_w + bar_w + 90
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">uvt-bench {escape(str(data.get("version", "")))}: '
        f'speedup over the baseline (medians of {data.get("runs", "?")} runs, log scale)</text>',
    ]
    decade = math.floor(lmin)
    while decade <= lmax:
        for m in (1, 2, 5):
            v = m * 10 ** decade
            if lo <= v <= hi:
                x = x_of(v)
                out.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{height - 30}" '
                           f'stroke="{"#444" if v == 1 else "#ddd"}"/>')
                out.append(f'<text x="{x:.1f}" y="{height - 15}" text-anchor="middle" fill="#555">{v:g}x</text>')
        decade += 1
    one = x_of(1.0)
    for i, r in enumerate(rows):
        y = top + i * row_h
        s = r["speedup"]
        x = x_of(s)
        color = "#2a7ab9" if s >= 1 else "#c0504d"
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(r["scenario"])}</text>')
        out.append(f'<rect x="{min(one, x):.1f}" y="{y + 4}" width="{abs(x - one):.1f}" height="{row_h - 8}" fill="{color}"/>')
        out.append(f'<text x="{max(one, x) + 4:.1f}" y="{y + 15}" fill="#222">{s:.2f}x</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
