"""Per-stage time against event size: the Rust pipeline (the backend's code, in-process through
`run_features`) next to the Python reference (the same stages in PyTorch, numpy and scipy),
on the same events, models and parameters, with a markdown table and a log-log plot.

Each side first runs once on the event's first `warmup_rows` spacepoints (a serving process
is warm), then `repeat` timed runs of which the fastest is kept (the least disturbed on a
shared machine).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exatrkx import reference
from exatrkx.bench_events import RUN_FEATURES

STAGES = ("embedding", "graph", "filter", "gnn", "gnn_refine", "tracks", "track_quality")


@dataclass
class StageTimes:
    """One event on one side: seconds per stage, total, edges after each stage."""

    side: str
    mu: float
    spacepoints: int
    timings: dict[str, float]
    total: float
    graph_sizes: list[int]
    num_tracks: int
    labels_equal: bool | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # the refining GNN passes (gnn_refine, gnn_refine2, ...) share one column
        refine = {k: v for k, v in self.timings.items() if k.startswith("gnn_refine")}
        if refine:
            self.timings = {k: v for k, v in self.timings.items() if k not in refine}
            self.timings["gnn_refine"] = sum(refine.values())


def run_rust(
    folder: Path,
    events: Path,
    overrides: dict[str, str],
    *,
    repeat: int,
    warmup_rows: int,
    out: Path,
) -> dict:
    """`run_features` on the one event in `events`; returns its summary entry (labels are
    written to `out`)."""
    if not RUN_FEATURES.is_file():
        raise FileNotFoundError(
            f"{RUN_FEATURES} not found: cargo build --release -p exatrkx-pipeline --examples"
        )
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "rust-summary.json"
    cmd = [str(RUN_FEATURES), "--model-repo", str(folder), "--events", str(events)]
    cmd += ["--out", str(out), "--repeat", str(repeat), "--warmup-rows", str(warmup_rows)]
    cmd += ["--summary", str(summary)]
    for key, value in overrides.items():
        cmd += ["--param", f"{key}={value}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"run_features failed on {events}:\n{done.stderr[-2000:]}")
    (entry,) = json.loads(summary.read_text())
    return entry


def run_python(
    folder: Path,
    features: np.ndarray,
    module_ids: np.ndarray | None,
    overrides: dict[str, str],
    *,
    repeat: int,
    warmup_rows: int,
) -> tuple[reference.ReferenceResult, float]:
    """The Python reference on one event: (fastest result, its wall time)."""
    params = reference.load_parameters(folder, overrides)
    pipeline = reference.ReferencePipeline(folder / "1", params)
    if warmup_rows:
        rows = slice(0, warmup_rows)
        pipeline.run(features[rows], None if module_ids is None else module_ids[rows])
    best = None
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        result = pipeline.run(features, module_ids)
        total = time.perf_counter() - start
        if best is None or total < best[1]:
            best = (result, total)
    return best


def growth_ratio(rows: list[StageTimes], side: str, small: int, large: int) -> float | None:
    """t(large) / t(small) of the total time, interpolated on log-log between the measured
    events of `side`; None when the events do not span both sizes."""
    points = sorted((r.spacepoints, r.total) for r in rows if r.side == side and r.total > 0)
    if len(points) < 2 or points[0][0] > small or points[-1][0] < large:
        return None
    xs = np.log([p[0] for p in points])
    ys = np.log([p[1] for p in points])
    at_small, at_large = np.interp(np.log([small, large]), xs, ys)
    return float(math.exp(at_large - at_small))


def scaling_table(rows: list[StageTimes]) -> str:
    """Markdown: one row per event and side, milliseconds per stage."""
    lines = [
        "| mu | spacepoints | side | " + " | ".join(STAGES) + " | total (ms) "
        "| edges graph / filter / gnn | tracks | labels |",
        "| ---: | ---: | --- | "
        + " | ".join("---:" for _ in STAGES)
        + " | ---: | ---: | ---: | --- |",
    ]
    for r in sorted(rows, key=lambda r: (r.spacepoints, r.side)):
        stages = " | ".join(f"{r.timings[s] * 1e3:.0f}" if s in r.timings else "" for s in STAGES)
        labels = {None: "", True: "agree", False: "DIFFER"}[r.labels_equal]
        sizes = " / ".join(f"{n:,}" for n in r.graph_sizes)
        lines.append(
            f"| {r.mu:g} | {r.spacepoints:,} | {r.side} | {stages} | {r.total * 1e3:.0f} "
            f"| {sizes} | {r.num_tracks:,} | {labels} |"
        )
    return "\n".join(lines) + "\n"


def plot_scaling(rows: list[StageTimes], path: Path, title: str = "") -> Path:
    """Log-log plot of time per stage and in total against spacepoints, one line style per
    side, with a linear-growth guide through the first Rust total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = sorted({r.side for r in rows})
    styles = ["-", "--", ":", "-."]
    colours = dict(zip(("total", *STAGES), plt.get_cmap("tab10").colors, strict=False))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for side, style in zip(sides, styles, strict=False):
        mine = sorted((r for r in rows if r.side == side), key=lambda r: r.spacepoints)
        n = [r.spacepoints for r in mine]
        for stage in ("total", *STAGES):
            t = [r.total if stage == "total" else r.timings.get(stage, np.nan) for r in mine]
            ax.plot(
                n,
                t,
                style,
                marker="o",
                markersize=3,
                color=colours[stage],
                linewidth=2.2 if stage == "total" else 1.2,
                label=f"{side} {stage}",
            )
    first = min(
        (r for r in rows if r.total > 0), key=lambda r: (r.side, r.spacepoints), default=None
    )
    if first is not None:
        n_max = max(r.spacepoints for r in rows)
        ax.plot(
            [first.spacepoints, n_max],
            [first.total, first.total * n_max / first.spacepoints],
            color="grey",
            linewidth=0.8,
            label="linear growth",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("spacepoints per event")
    ax.set_ylabel("seconds per event")
    ax.set_title(title or "time per stage against event size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
