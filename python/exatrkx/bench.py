"""`make bench`: the exatrkx backend next to its Python peers, on one machine in one run.

    python -m exatrkx.bench [--model-repository model_repository] [--out results/bench]
                            [--only scaling,perf] [--quick]

1. Events: one simulated event per pile-up of `--mu` (scaling) and `--perf-events` events at
   `--perf-mu` (perf_analyzer), cached under `OUT/events/`.
2. Models: the model repository's `exatrkx` when it holds its model files; otherwise random
   stand-in networks shaped like the trained ones (`exatrkx.bench_events`), whose radius is
   tuned per event to `--edges-per-spacepoint` candidate edges (random embeddings pack more
   spacepoints into a ball as the event grows; a trained one keeps the graph about linear).
3. Scaling (`OUT/scaling.md`, `scaling.png`): per-stage time against spacepoints, the Rust
   pipeline in-process next to the Python reference, labels compared; with trained models
   also the round trip through the server for both served models.
4. perf_analyzer (`OUT/perf.md`, `perf.png`): `exatrkx` and `exatrkx_ensemble` (the Python
   backend ensemble) in one tritonserver, gRPC, concurrency 1, 2 and 4, with 1 and 2 model
   instances; labels of both compared on every perf event first.
5. `OUT/README.md`: the machine, the models and every table; `OUT/*.json` the raw numbers.

The sections are functions of their own (`prepare`, `run_scaling`, `run_perf`, `write_report`)
so that other drivers (a soak test, say) can reuse the events, models and server set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exatrkx import bench_events, bench_perf, bench_repository, bench_scaling, paths, reference

DEFAULT_MUS = (2, 10, 50, 200, 300, 600)
# The backend's fused CPU kernels (docs/DESIGN.md, `cpu_kernels`) sum in another order than
# torch; a score that close to a cut can tip a candidate (one of 6,300 tracks on one of six
# pile-up-200 events). Labels agree when at most this share of spacepoints sits in tracks
# that differ.
LABEL_TOLERANCE = 0.002
SCALING_SIDES = ("rust", "python")
STEP_STAGES = {
    "exatrkx_py_embedding": "embedding",
    "exatrkx_py_radius_graph": "graph",
    "exatrkx_py_module_map_graph": "graph",
    "exatrkx_py_filter": "filter",
    "exatrkx_py_gnn": "gnn",
    "exatrkx_py_tracks": "tracks",
}


@dataclass
class Bench:
    """What the sections share: settings, the models used, the events and the results."""

    args: argparse.Namespace
    out: Path
    started: float = field(default_factory=time.monotonic)
    folder: Path | None = None  # the exatrkx model folder benchmarked
    trained: bool = True
    scaling_events: dict[float, Path] = field(default_factory=dict)  # mu -> features folder
    perf_events: Path | None = None
    overrides: dict[float, dict[str, str]] = field(default_factory=dict)  # per mu (stand-ins)
    scaling: list[bench_scaling.StageTimes] = field(default_factory=list)
    perf: list[bench_perf.PerfResult] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)  # label comparisons on served events
    notes: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def over_budget(self) -> bool:
        return self.elapsed() > self.args.budget_minutes * 60

    def log(self, message: str) -> None:
        print(f"[bench {self.elapsed():6.0f} s] {message}", flush=True)

    @property
    def void(self) -> bool:
        """A label mismatch anywhere makes the comparison void."""
        return any(r.labels_equal is False for r in self.scaling) or any(
            not c["equal"] for c in self.checks
        )


def differing_spacepoints(a: np.ndarray, b: np.ndarray) -> int:
    """Spacepoints whose track (the spacepoints sharing their label; alone for -1) is not the
    same in the labels `a` and `b`: the labels' numbering does not matter."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    both = (a >= 0) & (b >= 0)
    _, pair_index = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True)
    pair_count = np.bincount(pair_index.ravel())[pair_index.ravel()]
    count_a = np.bincount(a[a >= 0])[np.maximum(a, 0)]
    count_b = np.bincount(b[b >= 0])[np.maximum(b, 0)]
    same = (both & (pair_count == count_a) & (pair_count == count_b)) | ((a < 0) & (b < 0))
    return int((~same).sum())


def labels_agree(a: np.ndarray, b: np.ndarray) -> bool:
    """The same tracks up to `LABEL_TOLERANCE` of the spacepoints (and the same length)."""
    if len(a) != len(b):
        return False
    return differing_spacepoints(a, b) <= LABEL_TOLERANCE * len(a)


# --- machine --------------------------------------------------------------------------------


def machine_info() -> dict:
    """CPU model, cores, vector extensions, memory, load, versions, date, commit."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("", platform.machine(), "x86_64"):
                cpu = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "vector_extensions": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
        "memory_gb": memory_gb,
        "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "commit": commit,
    }


# --- 1 and 2: events and models -------------------------------------------------------------


def prepare(bench: Bench) -> None:
    args = bench.args
    events_root = bench.out / "events"
    for mu in args.mu:
        trackml_dir = events_root / f"mu{mu:g}" / "trackml"
        bench_events.simulate_events(trackml_dir, mu, 1, seed=args.seed)
        features_dir = events_root / f"mu{mu:g}" / "features"
        bench_events.write_feature_events(trackml_dir, features_dir)
        bench.scaling_events[mu] = features_dir
    perf_trackml = events_root / f"perf-mu{args.perf_mu:g}" / "trackml"
    bench_events.simulate_events(perf_trackml, args.perf_mu, args.perf_events, seed=args.seed + 1)
    bench.perf_events = events_root / f"perf-mu{args.perf_mu:g}" / "features"
    bench_events.write_feature_events(perf_trackml, bench.perf_events)
    bench.log(f"events ready: mu {', '.join(f'{m:g}' for m in args.mu)}; perf mu {args.perf_mu:g}")

    if bench_events.has_models(args.model_repository):
        bench.folder = reference.model_folder(args.model_repository)
        bench.trained = True
        bench.log(f"models: {bench.folder}")
        return
    bench.trained = False
    first_perf = _feature_events(bench.perf_events)[0]
    repo = bench.out / "stand-in-models"
    bench_events.write_fixture_models(repo, first_perf[0], args.edges_per_spacepoint)
    bench.folder = repo / "exatrkx"
    for mu, features_dir in bench.scaling_events.items():
        features = _feature_events(features_dir)[0][0]
        radius = bench_events.tuned_radius(bench.folder, features, args.edges_per_spacepoint)
        bench.overrides[mu] = {"radius": radius}
    bench.notes.append(
        f"No trained models in {args.model_repository}: random stand-in networks shaped like "
        "the trained ones (docs/TRAINING.md), radius tuned to about "
        f"{args.edges_per_spacepoint:g} candidate edges per spacepoint on each event "
        "(scaling) and on the first perf event (perf_analyzer). The times are those of "
        "networks of the trained size on graphs of a plausible size; track quality is "
        "meaningless."
    )
    bench.log(f"no trained models in {args.model_repository}: stand-ins in {repo}")


def _feature_events(directory: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    return [
        reference.load_feature_event(directory, event_id)
        for event_id in reference.list_feature_events(directory)
    ]


def _needs_module_ids(bench: Bench) -> bool:
    return reference.load_parameters(bench.folder).graph_construction == "module_map"


# --- 3: scaling -----------------------------------------------------------------------------


def run_scaling(bench: Bench) -> None:
    args = bench.args
    slow = set()  # sides that went past --max-event-seconds: larger events are skipped
    for mu in sorted(bench.scaling_events):
        features_dir = bench.scaling_events[mu]
        (features, module_ids), event_id = (
            _feature_events(features_dir)[0],
            reference.list_feature_events(features_dir)[0],
        )
        overrides = bench.overrides.get(mu, {})
        labels_dir = bench.out / "scaling" / f"mu{mu:g}"
        rust_labels = None
        for side in SCALING_SIDES:
            if bench.over_budget():
                bench.notes.append(f"scaling: {side} at mu {mu:g} skipped (time budget)")
                continue
            if side in slow:
                bench.notes.append(
                    f"scaling: {side} at mu {mu:g} skipped (a smaller event took more than "
                    f"{args.max_event_seconds:g} s)"
                )
                continue
            if side == "rust":
                entry = bench_scaling.run_rust(
                    bench.folder,
                    features_dir,
                    overrides,
                    repeat=args.repeat,
                    warmup_rows=args.warmup_rows,
                    out=labels_dir,
                )
                rust_labels = np.load(labels_dir / f"event{event_id:09d}-labels.npy")
                row = bench_scaling.StageTimes(
                    "rust",
                    mu,
                    entry["spacepoints"],
                    entry["timings"],
                    entry["total"],
                    entry["graph_sizes"],
                    entry["num_tracks"],
                )
            else:
                result, total = bench_scaling.run_python(
                    bench.folder,
                    features,
                    module_ids,
                    overrides,
                    repeat=args.repeat,
                    warmup_rows=args.warmup_rows,
                )
                equal = None if rust_labels is None else labels_agree(result.labels, rust_labels)
                row = bench_scaling.StageTimes(
                    "python",
                    mu,
                    len(features),
                    result.timings,
                    total,
                    result.graph_sizes,
                    result.num_tracks,
                    labels_equal=equal,
                )
            bench.scaling.append(row)
            if row.total > args.max_event_seconds:
                slow.add(side)
            bench.log(
                f"scaling mu {mu:g} ({row.spacepoints:,} spacepoints) {side}: "
                f"{row.total:.2f} s, edges {row.graph_sizes}"
                + ("" if row.labels_equal is None else f", labels agree: {row.labels_equal}")
            )
    _save(bench)


# --- 4: perf_analyzer -----------------------------------------------------------------------


def _model_inputs(bench: Bench, directory: Path):
    events = _feature_events(directory)
    with_ids = _needs_module_ids(bench)
    return [(x, ids if with_ids else None) for x, ids in events]


def check_served_labels(bench: Bench, server, events, what: str) -> list[float]:
    """Send every event to both models; record whether the labels agree. Returns the
    round-trip seconds of exatrkx and of the ensemble per event (flattened pairs)."""
    from exatrkx_client import ExaTrkXClient

    times = []
    with (
        ExaTrkXClient(server.grpc_url, model=bench_repository.MODEL) as ours,
        ExaTrkXClient(server.grpc_url, model=bench_repository.ENSEMBLE) as peer,
    ):
        for k, (x, ids) in enumerate(events):
            answers = []
            for client in (ours, peer):
                start = time.perf_counter()
                answers.append(client.infer(x, module_ids=ids)["LABELS"])
                times.append(time.perf_counter() - start)
            equal = labels_agree(answers[0], answers[1])
            bench.checks.append({"events": what, "event": k, "spacepoints": len(x), "equal": equal})
            if not equal:
                bench.log(f"LABELS DIFFER between exatrkx and the ensemble on {what} event {k}")
    return times


def server_scaling(bench: Bench, server) -> None:
    """Round trip per scaling event through both served models (trained models only: the
    stand-ins need a radius per event, which a served configuration cannot have)."""
    args = bench.args
    slow = set()
    for mu in sorted(bench.scaling_events):
        (event,) = _model_inputs(bench, bench.scaling_events[mu])[:1]
        for model, side in (
            (bench_repository.MODEL, "exatrkx server"),
            (bench_repository.ENSEMBLE, "ensemble server"),
        ):
            if side in slow or bench.over_budget():
                bench.notes.append(f"scaling: {side} at mu {mu:g} skipped")
                continue
            before = _step_infer_seconds(server)
            seconds = _round_trip(server, model, event)
            after = _step_infer_seconds(server)
            stages = (
                {STEP_STAGES[s]: after[s] - before.get(s, 0.0) for s in after}
                if model == bench_repository.ENSEMBLE
                else {}
            )
            bench.scaling.append(
                bench_scaling.StageTimes(side, mu, len(event[0]), stages, seconds, [], 0)
            )
            if seconds > args.max_event_seconds:
                slow.add(side)
            bench.log(f"server mu {mu:g} {side}: {seconds:.2f} s")


def _round_trip(server, model: str, event) -> float:
    from exatrkx_client import ExaTrkXClient

    x, ids = event
    with ExaTrkXClient(server.grpc_url, model=model) as client:
        start = time.perf_counter()
        client.infer(x, module_ids=ids)
        return time.perf_counter() - start


def _step_infer_seconds(server) -> dict[str, float]:
    """Total compute-infer seconds so far of every loaded ensemble step."""
    seconds = {}
    for name in STEP_STAGES:
        if server.is_model_ready(name):
            for entry in server.model_statistics(name)["model_stats"]:
                seconds[name] = entry["inference_stats"]["compute_infer"]["ns"] / 1e9
    return seconds


def run_perf(bench: Bench) -> None:
    args = bench.args
    events = _model_inputs(bench, bench.perf_events)
    data = bench_perf.write_input_data(
        bench.out / "perf" / "input-data.json",
        [x for x, _ in events],
        None if events[0][1] is None else [ids for _, ids in events],
    )
    library_dir = bench_perf.perf_library_dir(paths.REPO_ROOT / "build" / "bench" / "lib")
    backends = bench_repository.prepare_backend_directory(
        paths.REPO_ROOT / "build" / "bench" / "backends"
    )
    settings = bench_perf.PerfSettings(
        window_requests=args.window_requests,
        stability_percentage=args.stability,
        max_trials=args.max_trials,
    )
    server_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    for instances in args.instances:
        if bench.over_budget():
            bench.notes.append(f"perf: {instances} instance(s) skipped (time budget)")
            continue
        repo = bench_repository.write_bench_repository(
            bench.folder.parent,
            bench.out / "repository",
            instances=instances,
            model_name=bench.folder.name,
        )
        log_path = bench.out / "perf" / f"tritonserver-i{instances}.log"
        log_path.unlink(missing_ok=True)
        bench.log(f"starting tritonserver with {instances} instance(s) of both models")
        with (
            bench_repository.environment(server_env),
            bench_repository.running_bench_server(repo, backends, log_path=log_path) as server,
        ):
            times = check_served_labels(bench, server, events, f"perf mu {args.perf_mu:g}")
            bench.log(
                "perf events served by both (warm-up): "
                + ", ".join(f"{t:.2f}" for t in times)
                + " s (exatrkx, ensemble alternating)"
            )
            if instances == args.instances[0] and bench.trained and "scaling" in args.only:
                server_scaling(bench, server)
            for concurrency in args.concurrency:
                for model in (bench_repository.MODEL, bench_repository.ENSEMBLE):
                    if bench.over_budget():
                        bench.notes.append(
                            f"perf: {model} instances {instances} concurrency {concurrency} "
                            "skipped (time budget)"
                        )
                        continue
                    result = bench_perf.run_perf_analyzer(
                        model,
                        server.grpc_url,
                        data,
                        concurrency,
                        instances=instances,
                        settings=settings,
                        work=bench.out / "perf",
                        library_dir=library_dir,
                    )
                    bench.perf.append(result)
                    bench.log(
                        f"perf {model} i{instances} c{concurrency}: {result.throughput:.3g} "
                        f"events/s, p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms"
                        + ("" if result.stable else " (unstable)")
                    )
                    _save(bench)
            stats = {
                name: server.model_statistics(name)
                for name in (bench_repository.MODEL, bench_repository.ENSEMBLE, *STEP_STAGES)
                if server.is_model_ready(name)
            }
            (bench.out / "perf" / f"server-stats-i{instances}.json").write_text(
                json.dumps(stats, indent=1)
            )
    _save(bench)


# --- 5: report ------------------------------------------------------------------------------


def _save(bench: Bench) -> None:
    bench.out.mkdir(parents=True, exist_ok=True)
    raw = {
        "scaling": [asdict(r) for r in bench.scaling],
        "perf": bench_perf.results_json(bench.perf),
        "label_checks": bench.checks,
        "notes": bench.notes,
    }
    (bench.out / "results.json").write_text(json.dumps(raw, indent=1))


def goals(bench: Bench) -> list[str]:
    """The project's performance goals, as measured (reported, never asserted)."""
    lines = []
    by_key = {(r.model, r.instances, r.concurrency): r for r in bench.perf}
    for (model, instances, concurrency), ours in sorted(by_key.items()):
        peer = by_key.get((bench_repository.ENSEMBLE, instances, concurrency))
        if model != bench_repository.MODEL or peer is None or peer.throughput <= 0:
            continue
        ratio = ours.throughput / peer.throughput
        lines.append(
            f"- {instances} instance(s), concurrency {concurrency}: throughput "
            f"{ratio:.2f}x the ensemble's (goal >= 3x: {'met' if ratio >= 3 else 'not met'}), "
            f"p99 {ours.p99_ms:.0f} ms vs {peer.p99_ms:.0f} ms "
            f"({'lower' if ours.p99_ms < peer.p99_ms else 'NOT lower'})"
        )
    for side in sorted({r.side for r in bench.scaling}):
        ratio = bench_scaling.growth_ratio(bench.scaling, side, 30_000, 300_000)
        if ratio is not None:
            lines.append(f"- {side}: t(300k) / t(30k) = {ratio:.1f} (goal: near 10, linear growth)")
    for r in bench.scaling:
        if r.mu == 200:
            lines.append(
                f"- {r.side}: mu 200 event ({r.spacepoints:,} spacepoints) {r.total:.2f} s"
            )
    return lines


def write_report(bench: Bench, machine: dict) -> Path:
    args = bench.args
    _save(bench)
    machine = machine | {"load_average_end": list(os.getloadavg())}
    (bench.out / "machine.json").write_text(json.dumps(machine, indent=1))
    params = reference.load_parameters(bench.folder)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m exatrkx.bench` in {bench.elapsed() / 60:.1f} min.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| CPU | {machine['cpu']}, {machine['cores']} cores "
        f"({', '.join(machine['vector_extensions']) or 'no AVX2'}) |",
        f"| memory | {machine['memory_gb']} GB |",
        f"| load average (1, 5, 15 min) at start / end | "
        f"{', '.join(f'{v:.1f}' for v in machine['load_average'])} / "
        f"{', '.join(f'{v:.1f}' for v in machine['load_average_end'])} |",
        f"| date | {machine['date']} |",
        f"| software | torch {machine['torch']} ({machine['torch_threads']} threads), Python "
        f"{machine['python']}, tritonserver 2.51, commit {machine['commit']} |",
        "",
        f"Models: `{bench.folder}` ({'trained' if bench.trained else 'random stand-ins'}); "
        f"graph {params.graph_construction}, radius {params.radius:g}, knn {params.knn}, "
        f"filter_cut {params.filter_cut:g}, gnn_cut {params.gnn_cut:g}, track_builder "
        f"{params.track_builder}, precision {params.precision}.",
        "",
    ]
    lines += [f"Note: {note}" for note in bench.notes] + ([""] if bench.notes else [])
    if bench.void:
        lines += ["**LABELS DIFFER somewhere below: the comparison is void.**", ""]
    if bench.perf:
        sizes = [c["spacepoints"] for c in bench.checks if c["events"].startswith("perf")]
        lines += [
            "## Throughput and latency (perf_analyzer, gRPC)",
            "",
            f"{args.perf_events} simulated events at mu {args.perf_mu:g} "
            f"({int(np.mean(sizes)) if sizes else 0:,} spacepoints on average), requests cycling "
            f"through them; `exatrkx` (Rust backend) and `exatrkx_ensemble` (Python-backend "
            "ensemble) in one server, both with LABELS as their only output. Count windows of "
            f"at least max({args.window_requests}, 2 x concurrency) requests, stable when 3 "
            f"windows agree within {args.stability:g}%, at most {args.max_trials} windows "
            "(else a fixed count of 3 windows' requests, marked unstable). Labels of both "
            "models agree on every perf event: "
            f"{'yes' if all(c['equal'] for c in bench.checks) else 'NO'}.",
            "",
            bench_perf.results_table(bench.perf),
            "![throughput and p99 latency](perf.png)",
            "",
        ]
        bench_perf.plot_perf(bench.perf, bench.out / "perf.png")
    if bench.scaling:
        lines += [
            "## Time per stage against event size",
            "",
            "One simulated event per pile-up; `rust` = the backend's pipeline in-process "
            "(`run_features`), `python` = the Python reference in-process (a plain PyTorch "
            "pipeline); `* server` = round trip through tritonserver (ensemble stages from its "
            f"steps' statistics). Warm-up on {args.warmup_rows} spacepoints, fastest of "
            f"{args.repeat} run(s). Milliseconds.",
            "",
            bench_scaling.scaling_table(bench.scaling),
            "![time per stage](scaling.png)",
            "",
        ]
        bench_scaling.plot_scaling(bench.scaling, bench.out / "scaling.png")
    measured = goals(bench)
    if measured:
        lines += ["## Goals", "", *measured, ""]
    report = bench.out / "README.md"
    report.write_text("\n".join(lines))
    return report


# --- command line ---------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m exatrkx.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-repository", type=Path, default=paths.MODEL_REPOSITORY)
    parser.add_argument("--out", type=Path, default=paths.REPO_ROOT / "results" / "bench")
    parser.add_argument("--only", default="scaling,perf", help="sections: scaling, perf")
    parser.add_argument("--mu", type=_floats, default=list(DEFAULT_MUS), help="scaling pile-ups")
    parser.add_argument("--perf-mu", type=float, default=50.0)
    parser.add_argument("--perf-events", type=int, default=4)
    parser.add_argument("--instances", type=_ints, default=[1, 2])
    parser.add_argument("--concurrency", type=_ints, default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="scaling: timed runs per event")
    parser.add_argument("--warmup-rows", type=int, default=3000)
    parser.add_argument(
        "--max-event-seconds",
        type=float,
        default=120.0,
        help="scaling: a side slower than this on an event skips the larger ones",
    )
    parser.add_argument("--edges-per-spacepoint", type=float, default=10.0, help="stand-ins")
    parser.add_argument("--window-requests", type=int, default=6)
    parser.add_argument("--stability", type=float, default=25.0, help="percent")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument(
        "--threads", type=int, help="OMP_NUM_THREADS for the server (default: torch's)"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=18.0,
        help="sections still to run after this are skipped (and noted)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: small events, fewer measurements"
    )
    args = parser.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - {"scaling", "perf"}
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)} (known: scaling, perf)")
    if args.quick:
        args.mu, args.perf_mu, args.perf_events = [2, 10], 2.0, 2
        args.instances, args.concurrency, args.window_requests = [1], [1, 2], 3
        args.max_trials = 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args, args.out.resolve())
    bench.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    bench.log(
        f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}"
    )
    prepare(bench)
    if "scaling" in args.only:
        run_scaling(bench)
    if "perf" in args.only:
        run_perf(bench)
    report = write_report(bench, machine)
    bench.log(f"report: {report}")
    print(report.read_text())
    if bench.void:
        print("bench: labels differ between the Rust backend and a Python peer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
