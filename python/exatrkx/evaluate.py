"""Track-finding quality: efficiency, fake rate, duplicate rate.

The definitions match `trackml::evaluate` (Rust) exactly; docs/SIMULATION.md states them.
`python -m exatrkx.evaluate --events DIR --labels DIR [--out DIR] [--plots DIR]`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from exatrkx import trackml

PT_BINS = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 100.0]
ETA_BINS = [-4.0 + 0.5 * i for i in range(17)]
# production-vertex z (mm); the beam spot has sigma_z = 50 mm
VZ_BINS = [-200.0 + 25.0 * i for i in range(17)]
TABLES = ("efficiency_vs_pt", "efficiency_vs_eta", "efficiency_vs_vz")
COUNTS = (
    "events",
    "target_particles",
    "matched_targets",
    "matched_targets_double_majority",
    "candidates",
    "fake_candidates",
    "duplicate_candidates",
)


@dataclass
class EvalConfig:
    pt_min: float = 1.0
    eta_max: float = 4.0
    min_hits: int = 5
    max_vertex_r: float = 10.0
    min_track_hits: int = 3
    match_fraction: float = 0.5
    pt_bins: list[float] = field(default_factory=lambda: list(PT_BINS))
    eta_bins: list[float] = field(default_factory=lambda: list(ETA_BINS))
    vz_bins: list[float] = field(default_factory=lambda: list(VZ_BINS))


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _bins(edges, values, matched) -> list[dict]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (values >= lo) & (values < hi)
        out.append(
            {
                "lo": lo,
                "hi": hi,
                "particles": int(sel.sum()),
                "matched": int((sel & matched).sum()),
            }
        )
    return out


def finish(m: dict) -> dict:
    """Recompute the rates from the counts."""
    m["efficiency"] = _ratio(m["matched_targets"], m["target_particles"])
    m["double_majority_efficiency"] = _ratio(
        m["matched_targets_double_majority"], m["target_particles"]
    )
    m["fake_rate"] = _ratio(m["fake_candidates"], m["candidates"])
    m["duplicate_rate"] = _ratio(m["duplicate_candidates"], m["candidates"])
    return m


def merge(a: dict, b: dict) -> dict:
    """Sum of two metrics dicts with the same binning."""
    out = {k: a[k] + b[k] for k in COUNTS}
    for key in TABLES:
        out[key] = [
            {
                **x,
                "particles": x["particles"] + y["particles"],
                "matched": x["matched"] + y["matched"],
            }
            for x, y in zip(a[key], b[key], strict=True)
        ]
    return finish(out)


def empty(config: EvalConfig) -> dict:
    m = {k: 0 for k in COUNTS}
    nothing = np.zeros(0)
    m["efficiency_vs_pt"] = _bins(config.pt_bins, nothing, nothing.astype(bool))
    m["efficiency_vs_eta"] = _bins(config.eta_bins, nothing, nothing.astype(bool))
    m["efficiency_vs_vz"] = _bins(config.vz_bins, nothing, nothing.astype(bool))
    return finish(m)


def evaluate(event: trackml.Event, labels, config: EvalConfig | None = None) -> dict:
    """Metrics of one event; `labels` has one track id per spacepoint in hits order (-1: none)."""
    config = config or EvalConfig()
    if event.truth is None or event.particles is None:
        raise ValueError(f"event {event.event_id}: evaluation needs truth and particles files")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(event.hits):
        raise ValueError(
            f"event {event.event_id}: {len(labels)} labels for {len(event.hits)} spacepoints"
        )
    pid = event.truth["particle_id"].to_numpy(np.uint64)
    nhits = pd.Series(pid[pid != 0]).value_counts()

    df = pd.DataFrame({"label": labels, "pid": pid})[labels >= 0]
    sizes = df.groupby("label").size()
    sizes = sizes[sizes >= config.min_track_hits]
    df = df[df["label"].isin(sizes.index)]
    counts = df[df["pid"] != 0].groupby(["label", "pid"]).size().reset_index(name="n")
    best = counts.sort_values(["label", "n", "pid"], ascending=[True, False, True])
    best = best.drop_duplicates("label")
    best = best[best["n"].to_numpy() > config.match_fraction * sizes.loc[best["label"]].to_numpy()]
    double = best["n"].to_numpy() > config.match_fraction * nhits.loc[best["pid"]].to_numpy()
    matched_pids = set(best["pid"].tolist())
    double_pids = set(best["pid"][double].tolist())

    m = {
        "events": 1,
        "candidates": int(len(sizes)),
        "fake_candidates": int(len(sizes) - len(best)),
        "duplicate_candidates": int(len(best) - len(matched_pids)),
    }
    p = event.particles
    ids = p["particle_id"].to_numpy(np.uint64)
    px, py, pz = (p[c].to_numpy(np.float64) for c in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.copysign(np.inf, pz))
    vr = np.hypot(p["vx"].to_numpy(np.float64), p["vy"].to_numpy(np.float64))
    n = nhits.reindex(ids, fill_value=0).to_numpy()
    found = np.array([i in matched_pids for i in ids.tolist()], dtype=bool)
    found_dm = np.array([i in double_pids for i in ids.tolist()], dtype=bool)
    base = (n >= config.min_hits) & (vr < config.max_vertex_r)
    in_pt = pt > config.pt_min
    in_eta = np.abs(eta) < config.eta_max
    target = base & in_pt & in_eta
    m["target_particles"] = int(target.sum())
    m["matched_targets"] = int((target & found).sum())
    m["matched_targets_double_majority"] = int((target & found_dm).sum())
    m["efficiency_vs_pt"] = _bins(config.pt_bins, pt[base & in_eta], found[base & in_eta])
    m["efficiency_vs_eta"] = _bins(config.eta_bins, eta[base & in_pt], found[base & in_pt])
    vz = p["vz"].to_numpy(np.float64)
    m["efficiency_vs_vz"] = _bins(config.vz_bins, vz[target], found[target])
    return finish(m)


def evaluate_dirs(
    events_dir: str | Path, labels_dir: str | Path, config: EvalConfig | None = None
) -> tuple[dict, list[tuple[int, dict]]]:
    """Total and per-event metrics for every labels file in `labels_dir`."""
    config = config or EvalConfig()
    ids = sorted(
        int(p.name[5:14])
        for p in Path(labels_dir).iterdir()
        if p.name.startswith("event") and p.name[14:].startswith("-labels.csv")
    )
    if not ids:
        raise FileNotFoundError(f"no event%09d-labels.csv in {labels_dir}")
    total = empty(config)
    per_event = []
    for event_id in ids:
        event = trackml.read_event(events_dir, event_id)
        rows = trackml.read_labels(labels_dir, event_id)
        by_id = pd.Series(rows["track_id"].to_numpy(), index=rows["hit_id"].to_numpy())
        labels = by_id.reindex(event.hits["hit_id"].to_numpy(), fill_value=-1).to_numpy()
        m = evaluate(event, labels, config)
        per_event.append((event_id, m))
        total = merge(total, m)
    return total, per_event


def binomial_error(matched, particles):
    """sqrt(e (1 - e) / n) per bin (0 for empty bins)."""
    matched = np.asarray(matched, dtype=np.float64)
    n = np.asarray(particles, dtype=np.float64)
    e = np.divide(matched, n, out=np.zeros_like(n), where=n > 0)
    return e, np.sqrt(np.divide(e * (1 - e), n, out=np.zeros_like(n), where=n > 0))


def _line(name, m) -> str:
    return (
        f"{name:>10} {m['target_particles']:>8} {m['matched_targets']:>8} "
        f"{m['efficiency']:>8.4f} {m['double_majority_efficiency']:>8.4f} "
        f"{m['candidates']:>10} {m['fake_rate']:>8.4f} {m['duplicate_rate']:>8.4f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exatrkx.evaluate", description=__doc__)
    parser.add_argument("--events", required=True, help="directory with the events")
    parser.add_argument("--labels", required=True, help="directory with event%%09d-labels.csv")
    parser.add_argument("--out", help="write metrics.json here")
    parser.add_argument("--plots", help="write efficiency PNG plots here")
    defaults = EvalConfig()
    for name in ("pt_min", "eta_max", "max_vertex_r"):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=float, default=getattr(defaults, name)
        )
    for name in ("min_hits", "min_track_hits"):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    config = EvalConfig(
        pt_min=args.pt_min,
        eta_max=args.eta_max,
        min_hits=args.min_hits,
        max_vertex_r=args.max_vertex_r,
        min_track_hits=args.min_track_hits,
    )
    total, per_event = evaluate_dirs(args.events, args.labels, config)
    print(
        f"{'event':>10} {'targets':>8} {'matched':>8} {'eff':>8} {'eff(DM)':>8} "
        f"{'tracks':>10} {'fake':>8} {'dup':>8}"
    )
    for event_id, m in per_event:
        print(_line(str(event_id), m))
    print(_line("total", total))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "config": asdict(config),
            "total": total,
            "events": [{"event_id": i, "metrics": m} for i, m in per_event],
        }
        (out / "metrics.json").write_text(json.dumps(doc, indent=2))
    if args.plots:
        from exatrkx import plots

        for path in plots.efficiency_plots(total, args.plots):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
