"""`make demo`: simulate events, serve them through a real tritonserver over gRPC, report quality
and latency.

Steps: `exatrkx simulate` writes TrackML-format events; tritonserver starts on free loopback
ports with `model_repository/` and the Rust backend; `exatrkx_client` sends one gRPC request per
event and writes the labels; `exatrkx.evaluate` scores them against the truth; the server stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from exatrkx import evaluate, paths, trackml
from exatrkx.bench_repository import environment
from exatrkx.server import TritonServer
from exatrkx_client import ExaTrkXClient, run_events, summarize

EXATRKX = paths.REPO_ROOT / "target" / "release" / "exatrkx"


def simulate(out: Path, mu: int, events: int, seed: int) -> None:
    if not EXATRKX.exists():
        sys.exit(f"{EXATRKX} is missing: run `make setup` first")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(EXATRKX), "--log", "warn", "simulate", "--mu", str(mu), "--events", str(events)]
    cmd += ["--seed", str(seed), "--out", str(out)]
    subprocess.run(cmd, check=True)


STAT_KEYS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def _totals(stats: dict) -> dict[str, tuple[int, int]]:
    model = stats["model_stats"][0]["inference_stats"]
    return {k: (int(model[k].get("count", 0)), int(model[k]["ns"])) for k in STAT_KEYS}


def server_compute_ms(after: dict, before: dict | None = None) -> tuple[float, float]:
    """Mean queue and compute (input + infer + output) time per successful request, in ms,
    over the requests between the `before` and `after` statistics (Triton's are cumulative:
    the warm-up request must not dilute the events' means)."""
    end = _totals(after)
    start = _totals(before) if before else {k: (0, 0) for k in STAT_KEYS}
    ns = {k: end[k][1] - start[k][1] for k in STAT_KEYS}
    count = max(1, end["success"][0] - start["success"][0])
    compute = ns["compute_input"] + ns["compute_infer"] + ns["compute_output"]
    return ns["queue"] / count / 1e6, compute / count / 1e6


def server_threads(asked: int | None) -> int:
    """Intra-op threads for the server: as asked, else OMP_NUM_THREADS, else one core left to
    the server's other threads. An OpenMP team as wide as the machine waits at every barrier
    for whichever member the server's gRPC threads or the client preempted: on 2 cores a
    pile-up-200 event took 12.8 s with 2 threads and 8.4 s with 1 (in-process 2 threads win)."""
    if asked is not None:
        return max(1, asked)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exatrkx.demo", description=__doc__)
    parser.add_argument("--mu", type=int, default=200, help="pile-up (default 200)")
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("DEMO_SEED", 9001)))
    parser.add_argument("--work", type=Path, default=paths.REPO_ROOT / "data" / "demo")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model-repository", type=Path, default=paths.MODEL_REPOSITORY)
    parser.add_argument(
        "--server-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS (libtorch intra-op threads) for tritonserver; default: "
        "OMP_NUM_THREADS when set, else one less than the cores (docs/SERVING.md)",
    )
    args = parser.parse_args(argv)

    events_dir, labels_dir = args.work / "events", args.work / "labels"
    print(f"== simulating {args.events} events at mu={args.mu} (seed {args.seed})")
    start = time.perf_counter()
    simulate(events_dir, args.mu, args.events, args.seed)
    print(f"   {time.perf_counter() - start:.1f} s -> {events_dir}")

    threads = server_threads(args.server_threads)
    print(f"== starting tritonserver with {args.model_repository} ({threads} intra-op threads)")
    with (
        environment({"OMP_NUM_THREADS": str(threads)}),
        TritonServer(args.model_repository, log_path=args.work / "tritonserver.log") as server,
    ):
        url = server.grpc_url if args.protocol == "grpc" else server.http_url
        print(f"   ready: gRPC {server.grpc_url}, HTTP {server.http_url}")
        # one small request first, so the reported latencies are those of a warm server
        warm = trackml.read_event(events_dir, trackml.list_events(events_dir)[0])
        with ExaTrkXClient(url, protocol=args.protocol) as client:
            client.infer(trackml.features(warm)[:2000])
        warm_stats = server.model_statistics()
        print(f"== sending {args.events} events over {args.protocol}")
        shutil.rmtree(labels_dir, ignore_errors=True)
        results = run_events(url, events_dir, labels_dir, protocol=args.protocol)
        queue_ms, compute_ms = server_compute_ms(server.model_statistics(), warm_stats)
    failed = [r for r in results if r.error]
    if failed:
        print(f"{len(failed)} events failed; server log: {args.work / 'tritonserver.log'}")
        return 1

    total, _ = evaluate.evaluate_dirs(events_dir, labels_dir)
    s = summarize(results)
    lat = np.array([r.latency_s for r in results]) * 1e3
    print("== results")
    print(f"   events                 {s['events']} (mean {s['spacepoints_mean']:.0f} spacepoints)")
    print(
        f"   target particles       {total['target_particles']} (pT > 1 GeV, |eta| < 4, >= 5 hits)"
    )
    print(f"   tracking efficiency    {total['efficiency']:.4f}")
    print(f"   fake rate              {total['fake_rate']:.4f}")
    print(f"   duplicate rate         {total['duplicate_rate']:.4f}")
    print(
        f"   latency (client, ms)   mean {lat.mean():.0f}, "
        f"median {np.median(lat):.0f}, max {lat.max():.0f}"
    )
    print(f"   server per request     queue {queue_ms:.1f} ms, compute {compute_ms:.0f} ms")
    print(f"   labels                 {labels_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
