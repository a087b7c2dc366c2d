"""Benchmark of the Rust pipeline next to the Python reference on the same events and models:
per-stage and total wall time per event, graph sizes, and whether the labels agree.

    cargo build --release -p exatrkx-pipeline --examples
    PYTHONPATH=python .venv/bin/python pipeline/bench/bench.py [--models DIR] [--events DIR]

Without `--models`, bench-size fixture models are generated (shaped like trained networks:
256-wide filter, 8-iteration GNN); without `--events`, one synthetic event per `--sizes` entry.
For synthetic events the radius is tuned per event to about `--edges-per-spacepoint` candidate
edges (a stand-in for a trained embedding, where the graph grows linearly with the event).
Events are `event%09d-features.npy` (+ `-module_ids.npy`); TrackML CSV folders are converted.
Before each timed run, both pipelines run once on the event's first `--warmup-rows` rows
(TorchScript executors warm up on their first calls, as they are in a serving process); of
`--repeat` timed runs the fastest is reported (the least disturbed on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from exatrkx import fixtures, reference

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "target" / "release" / "examples" / "run_features"
VARIANTS = {
    "radius-cc": {"graph_construction": "radius", "track_builder": "cc"},
    "radius-walk": {"graph_construction": "radius", "track_builder": "walkthrough"},
    "map-cc": {"graph_construction": "module_map", "track_builder": "cc"},
}
STAGES = ("embedding", "graph", "filter", "gnn", "tracks")


def prepare_models(work: Path) -> Path:
    folder = work / "models" / "exatrkx"
    if not (folder / "config.pbtxt").exists():
        print(f"generating bench models in {folder} ...", flush=True)
        fixtures.make_model_folder(folder, size="bench")
    return folder


def prepare_events(work: Path, sizes: list[int]) -> Path:
    events = work / "events"
    for k, size in enumerate(sizes):
        if not (events / f"event{k + 1:09d}-features.npy").exists():
            print(f"generating a synthetic event of ~{size} spacepoints ...", flush=True)
            fixtures.write_event(events, k + 1, fixtures.synthetic_event(size, seed=100 + k))
    return events


def convert_trackml(source: Path, work: Path) -> Path:
    from exatrkx import trackml

    out = work / "converted"
    for event_id in trackml.list_events(source):
        event = trackml.read_event(source, event_id)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"event{event_id:09d}-features.npy", trackml.features(event))
        np.save(out / f"event{event_id:09d}-module_ids.npy", trackml.module_ids(event))
    return out


def tuned_radius(folder: Path, features: np.ndarray, edges_per_spacepoint: float) -> str:
    """A radius giving about the wanted number of candidate edges (median k-th neighbour)."""
    params = reference.load_parameters(folder)
    model = torch.jit.load(str(folder / "1" / params.embedding_model)).eval()
    with torch.no_grad():
        emb = reference.embed(model, torch.from_numpy(features), params.embedding_batch)
    k = max(1, round(2 * edges_per_spacepoint))
    dist, _ = cKDTree(emb).query(emb, k=k + 1)
    return f"{np.median(dist[:, -1]):.3g}"


def run_rust(folder: Path, events: Path, params: dict[str, str], args, out: Path):
    summary = out / "rust.json"
    cmd = [str(RUNNER), "--model-repo", str(folder), "--events", str(events), "--out", str(out)]
    cmd += ["--repeat", str(args.repeat), "--summary", str(summary)]
    cmd += ["--warmup-rows", str(args.warmup_rows)]
    if args.jit_optimize:
        cmd.append("--jit-optimize")
    for k, v in params.items():
        cmd += ["--param", f"{k}={v}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {e["event_id"]: e for e in json.loads(summary.read_text())}


def run_python(folder: Path, features, module_ids, params: dict[str, str], args):
    params = reference.load_parameters(folder, params)
    pipeline = reference.ReferencePipeline(folder / "1", params, jit_optimize=args.jit_optimize)
    if args.warmup_rows:
        rows = slice(0, args.warmup_rows)
        pipeline.run(features[rows], None if module_ids is None else module_ids[rows])
    best = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = pipeline.run(features, module_ids)
        total = time.perf_counter() - start
        if best is None or total < best[1]:
            best = (result, total)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, help="model folder (config.pbtxt) or repository")
    parser.add_argument("--events", type=Path, help="folder of .npy or TrackML events")
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "pipeline-bench")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--warmup-rows", type=int, default=3000, help="untimed warm-up run on this many rows"
    )
    parser.add_argument("--edges-per-spacepoint", type=float, default=10.0)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--skip-python", action="store_true")
    parser.add_argument(
        "--jit-optimize", action="store_true", help="TorchScript executor optimisation on (both)"
    )
    args = parser.parse_args(argv)
    if not RUNNER.exists():
        print(f"{RUNNER} missing: cargo build --release -p exatrkx-pipeline --examples")
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    folder = reference.model_folder(args.models) if args.models else prepare_models(args.work)
    synthetic = args.events is None
    if synthetic:
        events = prepare_events(args.work, [int(s) for s in args.sizes.split(",")])
    elif reference.list_feature_events(args.events):
        events = args.events
    else:
        events = convert_trackml(args.events, args.work)
    extra = dict(item.split("=", 1) for item in args.param)
    print(f"torch threads {torch.get_num_threads()}, models {folder}, events {events}")
    header = "event  spacepoints variant     side   " + " ".join(f"{s:>9}" for s in STAGES)
    print(header + "     total  edges(graph/filter/gnn)  tracks  labels")
    for event_id in reference.list_feature_events(events):
        features, module_ids = reference.load_feature_event(events, event_id)
        single = args.work / "single"
        single.mkdir(exist_ok=True)
        for f in single.iterdir():
            f.unlink()
        for kind in ("features", "module_ids"):
            src = events / f"event{event_id:09d}-{kind}.npy"
            if src.exists():
                (single / src.name).symlink_to(src.resolve())
        base = dict(extra)
        if synthetic and "radius" not in base:
            base["radius"] = tuned_radius(folder, features, args.edges_per_spacepoint)
        for name in args.variants.split(","):
            params = {**base, **VARIANTS[name]}
            if params["graph_construction"] == "module_map" and module_ids is None:
                continue
            out = args.work / "labels" / name
            out.mkdir(parents=True, exist_ok=True)
            rust = run_rust(folder, single, params, args, out)[event_id]
            rows = [
                ("rust", rust["timings"], rust["total"], rust["graph_sizes"], rust["num_tracks"])
            ]
            agree = ""
            if not args.skip_python:
                result, total = run_python(folder, features, module_ids, params, args)
                sizes, tracks = result.graph_sizes, result.num_tracks
                rows.append(("python", result.timings, total, sizes, tracks))
                rust_labels = np.load(out / f"event{event_id:09d}-labels.npy")
                agree = "equal" if np.array_equal(rust_labels, result.labels) else "DIFFER"
            for side, timings, total, sizes, tracks in rows:
                stages = " ".join(f"{timings.get(s, 0.0) * 1e3:9.1f}" for s in STAGES)
                print(
                    f"{event_id:5d} {len(features):12d} {name:11s} {side:6s} {stages} "
                    f"{total * 1e3:9.1f}  {'/'.join(map(str, sizes)):>23s}  {tracks:6d}  "
                    f"{agree if side == 'python' else ''}",
                    flush=True,
                )
            if len(rows) == 2:
                # The networks are the same libtorch calls on both sides; the rest is ours.
                own = [sum(r[1].get(s, 0.0) for s in ("graph", "tracks")) for r in rows]
                print(
                    f"{'':37s}python / rust: total {rows[1][2] / rows[0][2]:.2f}x, "
                    f"graph + tracks {own[1] / max(own[0], 1e-9):.1f}x",
                    flush=True,
                )
        if synthetic:
            print(f"{'':37s}radius {base.get('radius')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
