"""The trained models of `model_repository/` served by a real tritonserver: a held-out simulated
pile-up-200 event (a new seed every run, printed) and the real TrackML event go through the
server over gRPC; their labels equal the in-process `exatrkx run`, and the tracking quality is
that of the model card (model_repository/exatrkx/MODEL_CARD.md) within the spread of single
events."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from exatrkx import evaluate, paths, reference, trackml
from exatrkx.server import TritonServer
from exatrkx_client import ExaTrkXClient

MODEL = paths.MODEL_REPOSITORY / "exatrkx"
EXATRKX = paths.REPO_ROOT / "target" / "release" / "exatrkx"

# Floors below the model card's held-out numbers (pile-up 200: efficiency 0.970, fake rate
# 0.0092, single held-out events 0.967-0.972 and 0.0069-0.0104; earlier sets' single events of
# the validation, held-out and mu200-cval sets: fake rates 0.0068-0.0121, and one random draw
# here, seed 9553347, 0.0160; the real event 0.978 and 0.0): they fail on a broken or
# mismatched model or parameters (without the track-quality stage the fake rate is
# 0.021-0.024), not on an unlucky event. Raise them with the models (the project's goal is
# efficiency >= 0.97 and fake rate <= 0.01).
MIN_EFFICIENCY_MU200 = 0.93
MAX_FAKE_RATE_MU200 = 0.019
MIN_EFFICIENCY_REAL = 0.95
MAX_FAKE_RATE_REAL = 0.01


def test_trained_models_are_in_the_repository():
    for name in ("embed.pt", "filter.pt", "gnn.pt"):
        assert (MODEL / "1" / name).is_file(), f"{name} missing from {MODEL / '1'}"
    assert (MODEL / "MODEL_CARD.md").is_file()


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("physics")
    server = TritonServer(
        paths.MODEL_REPOSITORY,
        backend_directory=backend_directory,
        log_path=tmp / "tritonserver.log",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> tuple[object, int]:
    """One simulated pile-up-200 event with a seed no training or test set used."""
    seed = int.from_bytes(os.urandom(3), "little") + 10_000
    print(f"held-out event: mu 200, seed {seed}")
    out = tmp_path_factory.mktemp("held_out")
    subprocess.run(
        [str(EXATRKX), "--log", "warn", "simulate", "--mu", "200", "--events", "1"]
        + ["--seed", str(seed), "--out", str(out)],
        check=True,
    )
    return out, seed


def served_labels(server, event: trackml.Event) -> np.ndarray:
    with ExaTrkXClient(server.grpc_url, protocol="grpc") as client:
        return client.infer(trackml.features(event))["LABELS"]


def in_process_labels(events_dir, event_id: int, tmp_path) -> np.ndarray:
    out = tmp_path / "labels"
    subprocess.run(
        [str(EXATRKX), "--log", "warn", "run", "--events", str(events_dir), "--out", str(out)]
        + ["--model", str(MODEL), "--event", str(event_id)],
        check=True,
        capture_output=True,
    )
    return trackml.read_labels(out, event_id)["track_id"].to_numpy()


def test_held_out_pileup_200_event(server, held_out, tmp_path):
    events_dir, seed = held_out
    event = trackml.read_event(events_dir, 0)
    labels = served_labels(server, event)
    assert np.array_equal(labels, in_process_labels(events_dir, 0, tmp_path))
    m = evaluate.evaluate(event, labels)
    print(f"seed {seed}: {len(labels)} spacepoints, {m}")
    assert m["efficiency"] >= MIN_EFFICIENCY_MU200, (seed, m)
    assert m["fake_rate"] <= MAX_FAKE_RATE_MU200, (seed, m)


def test_real_trackml_event(server, tmp_path):
    shared = paths.shared_trackml_dir()
    assert shared is not None and trackml.list_events(shared), "shared TrackML event missing"
    event_id = trackml.list_events(shared)[0]
    event = trackml.read_event(shared, event_id)
    labels = served_labels(server, event)
    assert np.array_equal(labels, in_process_labels(shared, event_id, tmp_path))
    m = evaluate.evaluate(event, labels)
    print(f"real TrackML event {event_id}: {len(labels)} spacepoints, {m}")
    assert m["efficiency"] >= MIN_EFFICIENCY_REAL, m
    assert m["fake_rate"] <= MAX_FAKE_RATE_REAL, m


def test_tune_rebuilds_the_pipeline_tracks(tmp_path):
    """`exatrkx tune` runs the networks once and rebuilds tracks per setting: its configured
    setting scores exactly as the labels of `exatrkx run`, and a setting that can build no
    track scores zero."""
    shared = paths.shared_trackml_dir()
    event_id = trackml.list_events(shared)[0]
    event = trackml.read_event(shared, event_id)
    expected = evaluate.evaluate(event, in_process_labels(shared, event_id, tmp_path))
    served = reference.parse_pbtxt_parameters((MODEL / "config.pbtxt").read_text())
    length, builder = served["min_track_length"], served["track_builder"]
    out = tmp_path / "tune.jsonl"
    subprocess.run(
        [str(EXATRKX), "--log", "warn", "tune", "--events", str(shared), "--model", str(MODEL)]
        + ["--event", str(event_id), "--out", str(out)]
        + ["--grid", f"min_track_length={length},1000", "--grid", f"track_builder={builder},cc"],
        check=True,
        capture_output=True,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    by_setting = {
        (r["setting"]["min_track_length"], r["setting"]["track_builder"]): r for r in rows
    }
    mine = by_setting[(length, builder)]
    assert mine["efficiency"] == pytest.approx(expected["efficiency"])
    assert mine["fake_rate"] == pytest.approx(expected["fake_rate"])
    for b in (builder, "cc"):
        assert by_setting[("1000", b)]["candidates"] == 0
    assert by_setting[(length, "cc")]["candidates"] > 0
