"""Fixtures for the integration tests: a real tritonserver (from nvidia-pytriton) with the
exatrkx backend on loopback ports, random TorchScript models, small events, and the same
pipeline run in-process (backend/examples/run_event.rs) to compare against."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from exatrkx import paths, testing, trackml
from exatrkx.server import TritonServer

REPO = paths.REPO_ROOT
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
EVENT_ID = 1


def pytest_configure(config):
    config.addinivalue_line("markers", "server: needs tritonserver and the built backend")


@pytest.fixture(scope="session")
def backend_directory() -> Path:
    """`build/backends` with the freshly built backend: cargo (a no-op when up to date) builds
    the library and the in-process example; the library is laid out as `make setup` does."""
    # `--lib` as well: built for the example alone, the cdylib is not copied to target/release.
    build = "cargo build --release --quiet -p triton-exatrkx --lib --example run_event"
    subprocess.run(build.split(), cwd=REPO, check=True)
    built = TARGET / "libtriton_exatrkx.so"
    dest = paths.BACKEND_DIR / "exatrkx" / "libtriton_exatrkx.so"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_bytes() != built.read_bytes():
        # Replace atomically: a running server may have the old file mapped.
        tmp = dest.with_suffix(".so.tmp")
        shutil.copyfile(built, tmp)
        os.replace(tmp, dest)
    return paths.BACKEND_DIR


@pytest.fixture(scope="session")
def event_dir(tmp_path_factory) -> Path:
    """A folder with TrackML event 1: the real (small) one from shared data when present,
    otherwise synthetic hits in the same format."""
    shared = paths.shared_trackml_dir()
    if shared is not None and trackml.list_events(shared):
        return shared
    dest = tmp_path_factory.mktemp("events")
    x = testing.synthetic_features(5000, seed=1)
    r, phi, z = x[:, 0] * 1000.0, x[:, 1] * np.pi, x[:, 2] * 1000.0
    import pandas as pd

    pd.DataFrame(
        {
            "hit_id": np.arange(1, len(x) + 1),
            "x": r * np.cos(phi),
            "y": r * np.sin(phi),
            "z": z,
            "volume_id": 8,
            "layer_id": 2,
            "module_id": 1,
        }
    ).to_csv(dest / f"{trackml.event_prefix(EVENT_ID)}-hits.csv", index=False)
    return dest


@pytest.fixture(scope="session")
def event(event_dir) -> trackml.Event:
    return trackml.read_event(event_dir, EVENT_ID)


@pytest.fixture(scope="session")
def features(event) -> np.ndarray:
    return trackml.features(event)


def http_json(server: TritonServer, path: str, body: bytes | None = None) -> tuple[int, dict]:
    """GET (or POST `body`) on the server's HTTP endpoint; returns status and JSON."""
    request = urllib.request.Request(
        f"http://{server.http_url}{path}", data=body, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else {}


class InProcess:
    """The backend's code path without Triton: `run_event` reads the configuration the server
    serves and runs the pipeline on the same features."""

    def __init__(self, server: TritonServer, model: str, workdir: Path):
        status, config = http_json(server, f"/v2/models/{model}/config")
        assert status == 200, config
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{model}-config.json"
        self.config_path.write_text(json.dumps(config))
        self.model_dir = server.model_repository / model
        self.runs = 0

    def run(self, features: np.ndarray, *, module_ids: np.ndarray | None = None) -> dict:
        self.runs += 1
        base = self.workdir / f"run{self.runs}"
        np.ascontiguousarray(features, dtype="<f4").tofile(f"{base}.features")
        cmd = [
            str(TARGET / "examples" / "run_event"),
            f"--config={self.config_path}",
            f"--model-dir={self.model_dir}",
            f"--features={base}.features",
            f"--columns={features.shape[1]}",
            f"--labels={base}.labels",
            f"--edges={base}.edges",
            f"--scores={base}.scores",
        ]
        if module_ids is not None:
            np.ascontiguousarray(module_ids, dtype="<i8").tofile(f"{base}.modules")
            cmd.append(f"--module-ids={base}.modules")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        edges = np.fromfile(f"{base}.edges", dtype="<i8")
        return {
            "LABELS": np.fromfile(f"{base}.labels", dtype="<i8"),
            "EDGE_INDEX": edges.reshape(2, -1),
            "EDGE_SCORES": np.fromfile(f"{base}.scores", dtype="<f4"),
            "summary": json.loads(done.stdout),
        }


def start_server(tmp_path: Path, backend_directory: Path, **repository_options) -> TritonServer:
    """A server on a fresh model repository (random models) under `tmp_path`."""
    repo = testing.make_model_repository(tmp_path / "repo", **repository_options)
    return TritonServer(
        repo,
        backend_directory=backend_directory,
        log_verbose=1,
        log_path=tmp_path / "tritonserver.log",
    ).start()
