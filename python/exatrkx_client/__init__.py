"""Client for the `exatrkx` model on a Triton server: TrackML events in, label files out.

    from exatrkx_client import ExaTrkXClient
    with ExaTrkXClient("127.0.0.1:8001") as client:          # gRPC (default) or protocol="http"
        labels = client.infer(features)["LABELS"]

Command line: `python -m exatrkx_client --url HOST:PORT --events DIR --out DIR`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from exatrkx import trackml

MODEL = "exatrkx"
OUTPUTS = ("LABELS", "EDGE_INDEX", "EDGE_SCORES", "TRACKS")
TRACK_COLUMNS = ("label", "n_spacepoints", "pt", "eta", "phi", "d0", "z0", "chi2_ndf")


class ExaTrkXClient:
    """One connection to a Triton server serving the exatrkx model."""

    def __init__(
        self,
        url: str,
        *,
        protocol: str = "grpc",
        model: str = MODEL,
        timeout_s: float = 600.0,
    ):
        if protocol == "grpc":
            import tritonclient.grpc as client_module

            self._client = client_module.InferenceServerClient(url)
        elif protocol == "http":
            import tritonclient.http as client_module

            self._client = client_module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        self._module = client_module
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s

    def infer(
        self,
        features: np.ndarray,
        *,
        module_ids: np.ndarray | None = None,
        outputs: Sequence[str] = ("LABELS",),
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        """Send one event (features float32 [N, 9], optional module ids int64 [N]) and return
        the requested outputs by name."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        inputs = [self._module.InferInput("FEATURES", list(features.shape), "FP32")]
        inputs[0].set_data_from_numpy(features)
        if module_ids is not None:
            module_ids = np.ascontiguousarray(module_ids, dtype=np.int64)
            inputs.append(self._module.InferInput("MODULE_ID", list(module_ids.shape), "INT64"))
            inputs[1].set_data_from_numpy(module_ids)
        requested = [self._module.InferRequestedOutput(name) for name in outputs]
        kwargs = {"request_id": request_id, "outputs": requested}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._client.infer(self.model, inputs, **kwargs)
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ExaTrkXClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class EventResult:
    event_id: int
    spacepoints: int
    tracks: int
    latency_s: float
    labels_path: Path | None = None
    error: str | None = None


def _write_extras(out_dir: Path, event_id: int, hit_ids: np.ndarray, result: dict) -> None:
    prefix = trackml.event_prefix(event_id)
    if "EDGE_INDEX" in result:
        edges = result["EDGE_INDEX"]
        table = {"src_hit_id": hit_ids[edges[0]], "dst_hit_id": hit_ids[edges[1]]}
        if "EDGE_SCORES" in result:
            table["score"] = result["EDGE_SCORES"]
        pd.DataFrame(table).to_csv(out_dir / f"{prefix}-edges.csv", index=False)
    if "TRACKS" in result:
        tracks = pd.DataFrame(result["TRACKS"].reshape(-1, 8), columns=list(TRACK_COLUMNS))
        tracks.to_csv(out_dir / f"{prefix}-tracks.csv", index=False)


def run_events(
    url: str,
    events_dir: str | Path,
    out_dir: str | Path,
    *,
    protocol: str = "grpc",
    model: str = MODEL,
    send_module_ids: bool = False,
    outputs: Sequence[str] = ("LABELS",),
    events: Sequence[int] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[EventResult]:
    """Send every event of `events_dir` (or the listed ids), one request each, and write
    `event%09d-labels.csv` (hit_id,track_id) per event into `out_dir`; with EDGE_INDEX or
    TRACKS requested also `-edges.csv` / `-tracks.csv`. Latency is the client-side round trip
    of the request. A failed event is reported and skipped."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = list(dict.fromkeys(["LABELS", *outputs]))
    unknown = [name for name in wanted if name not in OUTPUTS]
    if unknown:
        raise ValueError(f"unknown outputs {unknown}; the model has {', '.join(OUTPUTS)}")
    ids = list(events) if events is not None else trackml.list_events(events_dir)
    results = []
    with ExaTrkXClient(url, protocol=protocol, model=model) as client:
        for event_id in ids:
            event = trackml.read_event(events_dir, event_id)
            features = trackml.features(event)
            modules = trackml.module_ids(event) if send_module_ids else None
            start = time.perf_counter()
            try:
                result = client.infer(
                    features,
                    module_ids=modules,
                    outputs=wanted,
                    request_id=trackml.event_prefix(event_id),
                )
            except Exception as e:  # the server's message says what was wrong
                latency = time.perf_counter() - start
                results.append(EventResult(event_id, len(features), 0, latency, error=str(e)))
                if log:
                    log(f"event {event_id}: FAILED after {latency * 1e3:.0f} ms: {e}")
                continue
            latency = time.perf_counter() - start
            labels = result["LABELS"]
            hit_ids = event.hits["hit_id"].to_numpy()
            path = trackml.write_labels(out_dir, event_id, hit_ids, labels)
            _write_extras(out_dir, event_id, hit_ids, result)
            tracks = len(np.unique(labels[labels >= 0]))
            results.append(EventResult(event_id, len(features), tracks, latency, path))
            if log:
                log(
                    f"event {event_id}: {len(features)} spacepoints, {tracks} tracks, "
                    f"{latency * 1e3:.1f} ms"
                )
    return results


def summarize(results: Sequence[EventResult]) -> dict[str, float]:
    """Counts and latency statistics (seconds) of the successful events."""
    ok = [r for r in results if r.error is None]
    latencies = sorted(r.latency_s for r in ok)
    summary = {"events": len(results), "failed": len(results) - len(ok)}
    if latencies:
        total = sum(latencies)
        summary |= {
            "spacepoints_mean": statistics.fmean(r.spacepoints for r in ok),
            "tracks_mean": statistics.fmean(r.tracks for r in ok),
            "latency_mean_s": statistics.fmean(latencies),
            "latency_median_s": statistics.median(latencies),
            "latency_p90_s": latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))],
            "latency_max_s": latencies[-1],
            "events_per_s": len(latencies) / total if total > 0 else float("inf"),
        }
    return summary
