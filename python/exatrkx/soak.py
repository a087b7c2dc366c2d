"""Soak: a bounded run of mixed requests against a real tritonserver with the exatrkx backend.

Good requests (events of several sizes) and bad ones (NaN, wrong width, features in the wrong
units, too many spacepoints, an unknown output, a short MODULE_ID, a wrong data type) are sent
in a seeded random order from several client threads. Every good answer is compared with a
reference computed once per distinct input, every bad request must fail with its expected
message, the server's resident memory is sampled from /proc while it runs, and the server log
is searched for errors. `make soak` runs the long version; tests/test_robustness_soak.py a
short one.

    python -m exatrkx.soak [--requests 20000] [--concurrency 4] [--instances 2] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from exatrkx import testing
from exatrkx.server import TritonServer

MODEL = "exatrkx"

# Error lines tritonserver writes on a machine without a GPU; nothing to do with the backend.
EXPECTED_LOG_ERRORS = (re.compile(r"CudaDriverHelper has not been initialized"),)


@dataclass
class SoakConfig:
    requests: int = 20000
    concurrency: int = 4
    instances: int = 2
    # Spacepoints of the distinct good events (synthetic straight tracks).
    sizes: tuple[int, ...] = (0, 1, 2, 50, 200, 500, 1000, 2000, 5000, 10000)
    bad_fraction: float = 0.1
    max_spacepoints: int = 20000
    seed: int = 0
    # Stop sending after this many seconds even if fewer requests went out.
    time_limit: float = 540.0
    # Memory is judged after this share of the requests (allocator pools, thread stacks and
    # libtorch caches fill up first).
    warmup_fraction: float = 0.25
    sample_interval: float = 0.25


@dataclass
class SoakReport:
    config: dict
    sent: int = 0
    seconds: float = 0.0
    good: int = 0
    good_correct: int = 0
    bad: int = 0
    bad_refused_as_expected: int = 0
    # Bad requests sent, by kind (the BadCase names), and client-side outcomes by kind.
    bad_by_kind: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # Server memory (VmRSS, MiB) against requests completed: [(completed, rss), ...].
    rss_curve: list[tuple[int, float]] = field(default_factory=list)
    rss_idle_mib: float = 0.0
    rss_after_warmup_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_max_mib: float = 0.0
    rss_slope_mib_per_1000: float = 0.0
    # The curve at every tenth of the requests: [(completed, rss), ...].
    rss_by_tenth: list[tuple[int, float]] = field(default_factory=list)
    latency_ms: dict = field(default_factory=dict)
    server_stats: dict = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_after_warmup_mib

    def summary(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return "\n".join(
            [
                f"requests: {self.sent} in {self.seconds:.1f} s ({rate:.1f}/s), "
                f"{self.good} good ({self.good_correct} correct), "
                f"{self.bad} bad ({self.bad_refused_as_expected} refused as expected)",
                "bad requests by kind: "
                + ", ".join(f"{k} {n}" for k, n in self.bad_by_kind.items()),
                f"latency ms (good): {self.latency_ms}",
                f"server RSS MiB: idle {self.rss_idle_mib:.0f}, after warm-up "
                f"{self.rss_after_warmup_mib:.0f}, end {self.rss_end_mib:.0f}, max "
                f"{self.rss_max_mib:.0f}; growth after warm-up {self.rss_growth_mib:+.1f}, "
                f"slope {self.rss_slope_mib_per_1000:+.2f} MiB per 1000 requests",
                "RSS MiB at each tenth of the requests: "
                + ", ".join(f"{c}: {r:.0f}" for c, r in self.rss_by_tenth),
                f"server statistics: {self.server_stats}",
                f"unexpected log errors: {len(self.log_errors)}; exit code {self.exit_code}",
                f"failures: {len(self.failures)}",
                *[f"  {f}" for f in self.failures[:20]],
            ]
        )


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS from /proc), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return inp


@dataclass
class BadCase:
    name: str
    inputs: list
    outputs: tuple[str, ...]
    # Every fragment must appear in the error message.
    expect: tuple[str, ...]


def bad_cases(good: np.ndarray, max_spacepoints: int) -> list[BadCase]:
    """Malformed requests built from one good event (at least 8 spacepoints)."""
    nan = good.copy()
    nan[5, 4] = np.nan
    radians = good.copy()
    radians[:, 1] *= np.pi
    radians[3, 1] = 3.0  # at least one value beyond [-1, 1] whatever the event
    in_mm = good.copy()
    in_mm[:, [0, 3, 6]] *= 1000.0
    in_mm[2, 0] = 600.0
    too_many = np.tile(good[:1], (max_spacepoints + 1, 1))
    labels = ("LABELS",)
    return [
        BadCase("NaN", [_input("FEATURES", nan, "FP32")], labels, ("FEATURES[5, 4]", "NaN")),
        BadCase(
            "wrong width",
            [_input("FEATURES", np.ascontiguousarray(good[:, :3]), "FP32")],
            labels,
            ("FEATURES", "3 feature columns"),
        ),
        BadCase(
            "phi in radians",
            [_input("FEATURES", radians, "FP32")],
            labels,
            ("FEATURES[", "phi/pi"),
        ),
        BadCase("r in mm", [_input("FEATURES", in_mm, "FP32")], labels, ("FEATURES[", "r/1000")),
        BadCase(
            "too many spacepoints",
            [_input("FEATURES", too_many, "FP32")],
            labels,
            ("FEATURES", str(max_spacepoints + 1), "max_spacepoints"),
        ),
        BadCase(
            "unknown output",
            [_input("FEATURES", good, "FP32")],
            ("LABELS", "SCORES"),
            ("SCORES",),
        ),
        BadCase(
            "short MODULE_ID",
            [_input("FEATURES", good, "FP32"), _input("MODULE_ID", np.zeros(3, np.int64), "INT64")],
            labels,
            ("MODULE_ID", "3 entries"),
        ),
        BadCase(
            "FP64",
            [_input("FEATURES", good.astype(np.float64), "FP64")],
            labels,
            ("FEATURES", "FP64"),
        ),
    ]


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS against requests completed, per 1000 requests."""
    if len(points) < 2:
        return 0.0
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    if np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0] * 1000.0)


def judge_memory(report: SoakReport, warm: float) -> None:
    """Fill the memory figures from the samples. RSS moves by tens of MiB with the size of
    the events in flight, so the levels compared are medians of the first and the last tenth
    of the samples taken after `warm` requests."""
    curve = report.rss_curve
    after = [p for p in curve if p[0] >= warm] or curve[-1:]
    tenth = max(1, len(after) // 10)
    report.rss_after_warmup_mib = float(np.median([p[1] for p in after[:tenth]]))
    report.rss_end_mib = float(np.median([p[1] for p in after[-tenth:]]))
    report.rss_max_mib = max(p[1] for p in curve)
    report.rss_slope_mib_per_1000 = round(_slope(after), 3)
    total = curve[-1][0]
    report.rss_by_tenth = [
        (c, r) for c, r in (next(p for p in curve if p[0] >= k * total / 10) for k in range(11))
    ]


def unexpected_log_errors(log_text: str) -> list[str]:
    """Error lines of the server log (glog `E` prefix) other than the expected ones."""
    lines = [line for line in log_text.splitlines() if re.match(r"^E\d{4} ", line)]
    return [line for line in lines if not any(p.search(line) for p in EXPECTED_LOG_ERRORS)]


def run_soak(
    server: TritonServer,
    cfg: SoakConfig,
    reference: Callable[[np.ndarray], np.ndarray],
) -> SoakReport:
    """Send the requests to a running server and judge the answers; the server keeps running."""
    report = SoakReport(config=asdict(cfg))
    events = [testing.synthetic_features(n, seed=100 + i) for i, n in enumerate(cfg.sizes)]
    expected = [reference(x) for x in events]
    bad = bad_cases(testing.synthetic_features(60, seed=7), cfg.max_spacepoints)

    rng = np.random.default_rng(cfg.seed)
    plan = [
        ("bad", int(rng.integers(len(bad))))
        if rng.random() < cfg.bad_fraction
        else ("good", int(rng.integers(len(events))))
        for _ in range(cfg.requests)
    ]
    pid = server.process.pid
    report.rss_idle_mib = rss_mib(pid)
    before = server.model_statistics(MODEL)["model_stats"][0]["inference_stats"]

    lock = threading.Lock()
    completed = 0
    latencies: list[float] = []
    outcomes: Counter = Counter()
    bad_kinds: Counter = Counter()
    local = threading.local()
    deadline = time.monotonic() + cfg.time_limit
    done = threading.Event()

    def sample_memory():
        while not done.is_set():
            with lock:
                count = completed
            try:
                report.rss_curve.append((count, round(rss_mib(pid), 1)))
            except (OSError, RuntimeError):
                return
            done.wait(cfg.sample_interval)

    def send(index: int) -> None:
        nonlocal completed
        if time.monotonic() > deadline:
            return
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(server.grpc_url)
        kind, which = plan[index]
        request_id = f"soak-{index}-{kind}-{which}"
        start = time.perf_counter()
        failure = None
        try:
            if kind == "good":
                x = events[which]
                result = local.client.infer(
                    MODEL,
                    [_input("FEATURES", x, "FP32")],
                    outputs=[grpcclient.InferRequestedOutput("LABELS")],
                    request_id=request_id,
                )
                labels = result.as_numpy("LABELS")
                if labels is None or not np.array_equal(labels, expected[which]):
                    failure = f"{request_id}: labels differ from the reference"
                outcome = "good_correct" if failure is None else "good_wrong"
            else:
                case = bad[which]
                try:
                    local.client.infer(
                        MODEL,
                        case.inputs,
                        outputs=[grpcclient.InferRequestedOutput(o) for o in case.outputs],
                        request_id=request_id,
                    )
                    failure = f"{request_id} ({case.name}) was answered"
                except InferenceServerException as e:
                    message = str(e)
                    missing = [w for w in case.expect if w not in message]
                    if missing:
                        failure = f"{request_id} ({case.name}): {missing} not in {message!r}"
                outcome = "bad_refused" if failure is None else "bad_wrong"
        except Exception as e:  # noqa: BLE001 (any client-side failure is a finding)
            failure = f"{request_id}: {type(e).__name__}: {e}"
            outcome = f"{kind}_error"
        elapsed = time.perf_counter() - start
        with lock:
            completed += 1
            outcomes[outcome] += 1
            if kind == "bad":
                bad_kinds[bad[which].name] += 1
            if kind == "good":
                latencies.append(elapsed)
            if failure is not None:
                report.failures.append(failure)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    start = time.monotonic()
    with ThreadPoolExecutor(cfg.concurrency) as pool:
        list(pool.map(send, range(len(plan))))
    report.seconds = time.monotonic() - start
    done.set()
    sampler.join()
    report.rss_curve.append((completed, round(rss_mib(pid), 1)))

    report.sent = completed
    report.good = outcomes["good_correct"] + outcomes["good_wrong"] + outcomes["good_error"]
    report.good_correct = outcomes["good_correct"]
    report.bad = outcomes["bad_refused"] + outcomes["bad_wrong"] + outcomes["bad_error"]
    report.bad_refused_as_expected = outcomes["bad_refused"]
    report.bad_by_kind = dict(sorted(bad_kinds.items()))
    report.outcomes = dict(sorted(outcomes.items()))
    if latencies:
        ms = np.array(latencies) * 1e3
        report.latency_ms = {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1),
        }
    judge_memory(report, cfg.warmup_fraction * completed)

    stats = server.model_statistics(MODEL)["model_stats"][0]["inference_stats"]
    report.server_stats = {
        k: int(stats[k]["count"]) - int(before[k]["count"]) for k in ("success", "fail")
    }
    report.log_errors = unexpected_log_errors(server.log_text())
    return report


def judge(report: SoakReport, *, max_rss_growth_mib: float) -> list[str]:
    """What went wrong, as readable lines (empty when the run passed)."""
    problems = list(report.failures)
    if report.good_correct != report.good:
        problems.append(f"{report.good - report.good_correct} good requests not answered right")
    if report.bad_refused_as_expected != report.bad:
        problems.append(f"{report.bad - report.bad_refused_as_expected} bad requests mishandled")
    if report.server_stats.get("success") != report.good:
        problems.append(f"server counted {report.server_stats} for {report.good} good requests")
    if report.rss_growth_mib > max_rss_growth_mib:
        problems.append(
            f"server memory grew {report.rss_growth_mib:.1f} MiB after warm-up "
            f"(limit {max_rss_growth_mib} MiB)"
        )
    problems += [f"log: {line}" for line in report.log_errors]
    if report.exit_code not in (None, 0):
        problems.append(f"tritonserver exited with {report.exit_code}")
    return problems


def markdown(report: SoakReport, problems: list[str], machine: str) -> str:
    """The report as a markdown page (results/soak/soak.md)."""
    cfg = report.config
    rate = report.sent / report.seconds if report.seconds else 0.0
    rows = [
        ("requests sent", f"{report.sent} in {report.seconds:.0f} s ({rate:.1f}/s)"),
        ("concurrency, instances", f"{cfg['concurrency']} clients, {cfg['instances']} instances"),
        ("event sizes (spacepoints)", ", ".join(str(n) for n in cfg["sizes"])),
        ("good requests", f"{report.good}, {report.good_correct} with the reference labels"),
        ("bad requests", f"{report.bad}, {report.bad_refused_as_expected} refused as expected"),
        ("server success / fail counts", f"{report.server_stats}"),
        *[(f"latency {k} (good, ms)", f"{v}") for k, v in report.latency_ms.items()],
        ("server RSS idle (MiB)", f"{report.rss_idle_mib:.0f}"),
        ("server RSS after warm-up (MiB)", f"{report.rss_after_warmup_mib:.0f}"),
        ("server RSS end (MiB)", f"{report.rss_end_mib:.0f}"),
        ("server RSS max (MiB)", f"{report.rss_max_mib:.0f}"),
        ("RSS slope after warm-up", f"{report.rss_slope_mib_per_1000:+.2f} MiB per 1000 requests"),
        ("unexpected log errors", f"{len(report.log_errors)}"),
        ("tritonserver exit code", f"{report.exit_code}"),
        ("verdict", "pass" if not problems else f"FAIL ({len(problems)} problems)"),
    ]
    lines = [
        "# Soak run",
        "",
        f"Machine: {machine}. Random TorchScript models (tests' sizes), synthetic events.",
        "",
        "| figure | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Bad requests by kind: "
        + ", ".join(f"{k} {n}" for k, n in report.bad_by_kind.items())
        + ".",
        "",
        "RSS (MiB) at each tenth of the requests: "
        + ", ".join(f"{c}: {r:.0f}" for c, r in report.rss_by_tenth)
        + ".",
    ]
    if problems:
        lines += ["", "## Problems", "", *[f"- {p}" for p in problems]]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def main(argv: list[str] | None = None) -> int:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(
        prog="python -m exatrkx.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--instances", type=int, default=defaults.instances)
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=defaults.sizes,
        help="spacepoints of the distinct good events, comma-separated",
    )
    parser.add_argument("--bad-fraction", type=float, default=defaults.bad_fraction)
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument(
        "--out-dir", type=Path, help="write soak.json and soak.md (the figures) in this folder"
    )
    parser.add_argument("--machine", default=None, help="machine description for soak.md")
    args = parser.parse_args(argv)
    cfg = SoakConfig(
        requests=args.requests,
        concurrency=args.concurrency,
        instances=args.instances,
        sizes=args.sizes,
        bad_fraction=args.bad_fraction,
        time_limit=args.time_limit,
        seed=args.seed,
    )
    backend_directory = testing.install_backend()
    with tempfile.TemporaryDirectory(prefix="exatrkx-soak-") as tmp:
        tmp = Path(tmp)
        repo = testing.make_model_repository(
            tmp / "repo",
            instance_count=cfg.instances,
            parameters={"max_spacepoints": str(cfg.max_spacepoints)},
        )
        server = TritonServer(
            repo, backend_directory=backend_directory, log_path=tmp / "tritonserver.log"
        ).start()
        try:
            in_process = testing.InProcess(server, MODEL, tmp / "reference")
            report = run_soak(server, cfg, lambda x: in_process.run(x)["LABELS"])
        finally:
            report_exit = server.stop(timeout=60)
        report.exit_code = report_exit
        report.log_errors = unexpected_log_errors(server.log_text())
    print(report.summary())
    problems = judge(report, max_rss_growth_mib=args.max_rss_growth_mib)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(report) | {"problems": problems}, indent=1) + "\n")
        print(f"report: {args.out}")
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        record = asdict(report) | {"problems": problems}
        (args.out_dir / "soak.json").write_text(json.dumps(record, indent=1) + "\n")
        page = markdown(report, problems, args.machine or _machine())
        (args.out_dir / "soak.md").write_text(page)
        print(f"figures: {args.out_dir / 'soak.md'}, {args.out_dir / 'soak.json'}")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
