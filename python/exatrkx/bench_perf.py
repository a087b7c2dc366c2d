"""perf_analyzer against the exatrkx model and its Python peer: real event inputs, stable
measurement settings for a small shared machine, and the results as rows and markdown.

    data = write_input_data("perf/events.json", [features1, features2])
    result = run_perf_analyzer("exatrkx", server.grpc_url, data, concurrency=2, ...)

perf_analyzer ships in the tritonclient wheel and needs `libb64.so.0d` and `libcudart.so.12`,
which nvidia-pytriton bundles under hashed names (`perf_library_dir` links them under the
names it asks for). Its random inputs may be NaN, so every request carries a real event.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exatrkx.bench_repository import pytriton_libs_dir

# perf_analyzer's CSV columns (microseconds) and our names for them (milliseconds).
LATENCY_COLUMNS = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Server Queue": "queue_ms",
    "Server Compute Input": "compute_input_ms",
    "Server Compute Infer": "compute_infer_ms",
    "Server Compute Output": "compute_output_ms",
}


@dataclass
class PerfSettings:
    """Measurement settings. Windows hold at least `window_requests` requests (and
    `2 x concurrency`): count windows, not time windows, because one request takes from
    tenths of a second to seconds. A measurement is stable when the last 3 windows agree
    within `stability_percentage` in throughput and average latency; after `max_trials`
    windows without that, it is measured once more over a fixed `fallback_windows` windows'
    worth of requests and marked unstable."""

    window_requests: int = 6
    stability_percentage: float = 20.0
    max_trials: int = 6
    fallback_windows: int = 3
    timeout_s: float = 600.0

    def requests_per_window(self, concurrency: int) -> int:
        return max(self.window_requests, 2 * concurrency)


@dataclass
class PerfResult:
    model: str
    instances: int
    concurrency: int
    throughput: float  # inferences per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float
    stable: bool = True
    extra: dict = field(default_factory=dict)


def find_perf_analyzer() -> Path:
    """perf_analyzer next to this interpreter (the tritonclient wheel's), then PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    found = beside if beside.is_file() else shutil.which("perf_analyzer")
    if not found:
        raise FileNotFoundError("perf_analyzer not found: install tritonclient (make setup)")
    return Path(found)


def perf_library_dir(dest: Path) -> Path:
    """A folder with `libb64.so.0d` and `libcudart.so.12` linked to nvidia-pytriton's
    bundled copies, for perf_analyzer's LD_LIBRARY_PATH."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    libs = pytriton_libs_dir()
    for pattern, name in (
        ("libb64-*.so.0d", "libb64.so.0d"),
        ("libcudart-*.so.12*", "libcudart.so.12"),
    ):
        matches = sorted(libs.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"no {pattern} in {libs} (perf_analyzer needs {name})")
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(matches[0])
    return dest


def _tensor_json(array: np.ndarray) -> dict:
    return {"b64": base64.b64encode(array.tobytes()).decode("ascii"), "shape": list(array.shape)}


def input_data(features: list[np.ndarray], module_ids: list[np.ndarray] | None = None) -> dict:
    """perf_analyzer's `--input-data` JSON: one entry per event (requests cycle through
    them), tensors as base64 of their little-endian bytes."""
    data = []
    for k, x in enumerate(features):
        entry = {"FEATURES": _tensor_json(np.ascontiguousarray(x, dtype="<f4"))}
        if module_ids is not None:
            entry["MODULE_ID"] = _tensor_json(np.ascontiguousarray(module_ids[k], dtype="<i8"))
        data.append(entry)
    return {"data": data}


def write_input_data(
    path: Path, features: list[np.ndarray], module_ids: list[np.ndarray] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(input_data(features, module_ids)))
    return path


def parse_perf_csv(text: str) -> list[dict[str, float]]:
    """Rows of perf_analyzer's `-f` CSV: concurrency, throughput, and the latencies of
    `LATENCY_COLUMNS` in milliseconds."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("Concurrency"):
            continue
        parsed = {
            "concurrency": int(float(row["Concurrency"])),
            "throughput": float(row["Inferences/Second"]),
        }
        for column, name in LATENCY_COLUMNS.items():
            if column not in row:
                raise ValueError(f"perf_analyzer CSV has no column '{column}'")
            parsed[name] = float(row[column]) / 1000.0
        rows.append(parsed)
    return rows


def perf_command(
    perf_analyzer: Path,
    model: str,
    url: str,
    data: Path,
    concurrency: int,
    settings: PerfSettings,
    csv_path: Path,
    *,
    fixed_count: bool = False,
) -> list[str]:
    cmd = [str(perf_analyzer), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data)]
    cmd += ["--concurrency-range", f"{concurrency}:{concurrency}", "-f", str(csv_path)]
    window = settings.requests_per_window(concurrency)
    if fixed_count:
        cmd += ["--request-count", str(window * settings.fallback_windows)]
    else:
        cmd += ["--measurement-mode", "count_windows", "--measurement-request-count", str(window)]
        cmd += ["-s", f"{settings.stability_percentage:g}", "-r", str(settings.max_trials)]
    return cmd


def run_perf_analyzer(
    model: str,
    url: str,
    data: Path,
    concurrency: int,
    *,
    instances: int,
    settings: PerfSettings,
    work: Path,
    library_dir: Path,
) -> PerfResult:
    """One perf_analyzer measurement at one concurrency (gRPC, synchronous requests)."""
    perf_analyzer = find_perf_analyzer()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(library_dir)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    )
    stem = f"{model}-i{instances}-c{concurrency}"
    logs = []
    for fixed_count in (False, True):
        csv_path = work / f"{stem}.csv"
        csv_path.unlink(missing_ok=True)
        cmd = perf_command(
            perf_analyzer,
            model,
            url,
            data,
            concurrency,
            settings,
            csv_path,
            fixed_count=fixed_count,
        )
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=settings.timeout_s, check=False
        )
        logs.append("$ " + " ".join(cmd) + "\n" + done.stdout + done.stderr)
        (work / f"{stem}.log").write_text("\n".join(logs))
        if done.returncode == 0 and csv_path.exists():
            row = parse_perf_csv(csv_path.read_text())[0]
            return PerfResult(model, instances, stable=not fixed_count, **row)
        if "stable measurement" not in done.stdout + done.stderr:
            raise RuntimeError(f"perf_analyzer failed ({done.returncode}) on {model}:\n{logs[-1]}")
    raise RuntimeError(f"perf_analyzer gave no result for {model}:\n{logs[-1]}")


def results_table(results: list[PerfResult]) -> str:
    """Markdown: one row per model, instance count and concurrency; the exatrkx/ensemble
    throughput ratio at the same instances and concurrency."""
    by_key = {(r.model, r.instances, r.concurrency): r for r in results}
    lines = [
        "| model | instances | concurrency | throughput (events/s) | p50 (ms) | p95 (ms) "
        "| p99 (ms) | server queue (ms) | server compute (ms) | vs ensemble |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: (r.instances, r.concurrency, r.model)):
        peer = by_key.get(("exatrkx_ensemble", r.instances, r.concurrency))
        ratio = (
            f"{r.throughput / peer.throughput:.2f}x"
            if peer is not None and r.model != peer.model and peer.throughput > 0
            else ""
        )
        compute = r.compute_input_ms + r.compute_infer_ms + r.compute_output_ms
        mark = "" if r.stable else " (unstable)"
        lines.append(
            f"| {r.model} | {r.instances} | {r.concurrency} | {r.throughput:.3g}{mark} "
            f"| {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.p99_ms:.0f} | {r.queue_ms:.0f} "
            f"| {compute:.0f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def results_json(results: list[PerfResult]) -> list[dict]:
    return [asdict(r) for r in results]


def plot_perf(results: list[PerfResult], path: Path) -> Path:
    """Throughput and p99 latency against concurrency, one line per model and instance count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model, colour in (("exatrkx", "tab:blue"), ("exatrkx_ensemble", "tab:orange")):
        for instances, style in ((1, "-"), (2, "--"), (4, ":")):
            mine = sorted(
                (r for r in results if r.model == model and r.instances == instances),
                key=lambda r: r.concurrency,
            )
            if not mine:
                continue
            c = [r.concurrency for r in mine]
            label = f"{model}, {instances} instance{'s' if instances > 1 else ''}"
            left.plot(c, [r.throughput for r in mine], style, marker="o", color=colour, label=label)
            right.plot(c, [r.p99_ms / 1e3 for r in mine], style, marker="o", color=colour)
    left.set_ylabel("throughput (events/s)")
    right.set_ylabel("p99 latency (s)")
    for ax in (left, right):
        ax.set_xlabel("concurrent requests")
        ax.set_xticks(sorted({r.concurrency for r in results}))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
