"""The chart's Grafana dashboard drawn as a PNG from a Prometheus server's answers.

Each panel of the dashboard JSON (the chart's ConfigMap) becomes a subplot: its queries run
over the last `--seconds` as range queries (Grafana's $__rate_interval taken as `--rate`), one
line per series, labelled by the panel's legend format. For the README's picture and for a
look at a real run without a Grafana:

    python scripts/dashboard_png.py --prometheus http://127.0.0.1:9090 \
        --dashboard dashboard.json --out dashboard.png
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import requests

LEGEND_FIELD = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend(template: str, labels: dict[str, str]) -> str:
    return LEGEND_FIELD.sub(lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def query_range(prometheus: str, expr: str, seconds: float, step: float) -> list[dict]:
    end = time.time()
    params = {"query": expr, "start": end - seconds, "end": end, "step": step}
    body = requests.get(f"{prometheus}/api/v1/query_range", params=params, timeout=30).json()
    if body.get("status") != "success":
        raise ValueError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def render(
    prometheus: str, dashboard: dict, out: Path, seconds: float = 120, rate: str = "30s"
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(13, 3.2 * rows), squeeze=False)
    step = max(1.0, seconds / 120)
    origin = time.time() - seconds  # every subplot's x axis: seconds into the range
    for index, panel in enumerate(panels):
        axis = axes[index // columns][index % columns]
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate)
            for series in query_range(prometheus, expr, seconds, step):
                points = [(float(t), float(v)) for t, v in series["values"] if v != "NaN"]
                if points:
                    axis.plot(
                        [t - origin for t, _ in points],
                        [v for _, v in points],
                        label=legend(target.get("legendFormat", ""), series["metric"]),
                    )
        axis.set_title(panel["title"], fontsize=10)
        axis.set_xlabel("s", fontsize=8)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        axis.set_ylabel(unit, fontsize=8)
        axis.tick_params(labelsize=7)
        if axis.lines:
            axis.legend(fontsize=6, loc="upper left")
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(dashboard["title"], fontsize=12)
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL of the Prometheus API")
    parser.add_argument("--dashboard", required=True, type=Path, help="the dashboard's JSON")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seconds", type=float, default=600, help="time range to draw")
    parser.add_argument("--rate", default="1m", help="the window $__rate_interval stands for")
    args = parser.parse_args()
    dashboard = json.loads(args.dashboard.read_text())
    print(render(args.prometheus, dashboard, args.out, args.seconds, args.rate))


if __name__ == "__main__":
    main()
