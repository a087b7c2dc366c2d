"""The two commands: `python -m exatrkx.server` (start, print ports, stop on a signal) and
`python -m exatrkx_client` (TrackML events in, label files out)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import EVENT_ID, InProcess, http_json, start_server
from exatrkx import paths, testing, trackml

ENV = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT / "python")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    server = start_server(tmp_path_factory.mktemp("cli"), backend_directory)
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_writes_the_in_process_labels(protocol, server, event_dir, event, tmp_path):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    out = tmp_path / "labels"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exatrkx_client",
            f"--url={url}",
            f"--events={event_dir}",
            f"--out={out}",
            f"--protocol={protocol}",
            "--outputs",
            "LABELS",
            "EDGE_INDEX",
            "EDGE_SCORES",
            "TRACKS",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"event {EVENT_ID}: {len(event)} spacepoints" in done.stdout
    assert "latency mean" in done.stdout and "1 events, 0 failed" in done.stdout
    labels = trackml.read_labels(out, EVENT_ID)
    assert list(labels.columns) == ["hit_id", "track_id"]
    np.testing.assert_array_equal(labels["hit_id"], event.hits["hit_id"])
    expected = InProcess(server, "exatrkx", tmp_path).run(trackml.features(event))
    np.testing.assert_array_equal(labels["track_id"], expected["LABELS"])
    edges = pd.read_csv(out / f"{trackml.event_prefix(EVENT_ID)}-edges.csv")
    assert list(edges.columns) == ["src_hit_id", "dst_hit_id", "score"]
    assert len(edges) == expected["EDGE_INDEX"].shape[1]
    hit_ids = event.hits["hit_id"].to_numpy()
    np.testing.assert_array_equal(edges["src_hit_id"], hit_ids[expected["EDGE_INDEX"][0]])


def test_client_reports_a_failing_event(server, tmp_path):
    # An event whose features are not finite: the server refuses it, the client says so.
    events = tmp_path / "events"
    events.mkdir()
    hits = pd.DataFrame(
        {
            "hit_id": [1, 2, 3],
            "x": [1.0, np.nan, 3.0],
            "y": [1.0, 2.0, 3.0],
            "z": [0.0, 1.0, 2.0],
            "volume_id": 8,
            "layer_id": 2,
            "module_id": 1,
        }
    )
    hits.to_csv(events / "event000000007-hits.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "exatrkx_client", f"--url={server.grpc_url}"]
        + [f"--events={events}", f"--out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 1
    assert "event 7: FAILED" in done.stdout and "not finite" in done.stdout, done.stdout


def test_server_command_prints_ports_and_stops_on_sigterm(backend_directory, tmp_path):
    repo = testing.make_model_repository(tmp_path / "repo")
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "exatrkx.server", f"--model-repository={repo}"]
        + [f"--backend-directory={backend_directory}", f"--log-file={log}", "--json"]
        # Options after `--` go to tritonserver as they are.
        + ["--", "--backend-config=exatrkx,jit-optimize=true"],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        urls = json.loads(process.stdout.readline())
        assert set(urls) >= {"http", "grpc", "metrics", "log", "pid"}
        assert urls["http"].startswith("127.0.0.1:") and urls["grpc"].startswith("127.0.0.1:")

        class Endpoint:
            http_url = urls["http"]

        status, meta = http_json(Endpoint, "/v2/models/exatrkx")
        assert status == 200 and meta["name"] == "exatrkx"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        # The server process is gone too.
        with pytest.raises(ProcessLookupError):
            os.kill(urls["pid"], 0)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "successfully loaded 'exatrkx'" in text
    assert "TorchScript graph executor optimisation on" in text
