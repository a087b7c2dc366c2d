"""Fixtures for the integration tests: a real tritonserver (from nvidia-pytriton) with the
exatrkx backend on loopback ports, random TorchScript models, small events, and the same
pipeline run in-process (backend/examples/run_event.rs) to compare against."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from exatrkx import paths, testing, trackml
from exatrkx.server import TritonServer
from exatrkx.testing import InProcess  # noqa: F401 (the tests import it from here)

EVENT_ID = 1


def pytest_configure(config):
    config.addinivalue_line("markers", "server: needs tritonserver and the built backend")


@pytest.fixture(scope="session")
def backend_directory() -> Path:
    """`build/backends` with the freshly built backend (and the in-process example)."""
    return testing.install_backend()


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


def start_server(tmp_path: Path, backend_directory: Path, **repository_options) -> TritonServer:
    """A server on a fresh model repository (random models) under `tmp_path`."""
    repo = testing.make_model_repository(tmp_path / "repo", **repository_options)
    return TritonServer(
        repo,
        backend_directory=backend_directory,
        log_verbose=1,
        log_path=tmp_path / "tritonserver.log",
    ).start()
