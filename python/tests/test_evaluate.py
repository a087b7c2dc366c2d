import json

import numpy as np
import pandas as pd
import pytest
import rust_tools

from exatrkx import evaluate, trackml
from exatrkx.paths import shared_trackml_dir

REAL = shared_trackml_dir()
needs_rust = pytest.mark.skipif(
    not rust_tools.EXATRKX.exists(),
    reason="target/release/exatrkx not built (cargo build --release)",
)


def toy_event() -> trackml.Event:
    """Particles 1..4 with 10, 10, 6, 6 spacepoints (all targets), then 6 noise hits."""
    pids = np.repeat([1, 2, 3, 4, 0], [10, 10, 6, 6, 6])
    n = len(pids)
    hits = pd.DataFrame(
        {
            "hit_id": np.arange(1, n + 1),
            "x": 100.0,
            "y": 0.0,
            "z": 0.0,
            "volume_id": 8,
            "layer_id": 2,
            "module_id": 1,
        }
    )
    truth = pd.DataFrame({"hit_id": hits["hit_id"], "particle_id": pids})
    particles = pd.DataFrame(
        {
            "particle_id": [1, 2, 3, 4],
            "vx": 0.0,
            "vy": 0.0,
            # along the beam line; particle 4 outside the vertex-z table
            "vz": [-30.0, 10.0, 10.0, 250.0],
            "px": 2.0,
            "py": 0.0,
            "pz": 0.5,
            "q": 1,
            "nhits": 0,
        }
    )
    return trackml.Event(0, hits, truth, particles)


def test_split_merged_and_noise_candidates():
    labels = np.full(38, -1)
    labels[0:5] = 0  # particle 1, first half: pure, matched
    labels[5:10] = 1  # second half: a duplicate; neither half is a double-majority match
    labels[10:20] = 2  # particle 2 whole ...
    labels[32:34] = 2  # ... plus two noise hits: 10/12 still a match
    labels[20:32] = 3  # particles 3 and 4 merged 6 + 6: no majority, fake
    labels[34:37] = 4  # pure noise: fake
    labels[37] = 5  # one spacepoint: not a candidate
    m = evaluate.evaluate(toy_event(), labels)
    assert m["target_particles"] == 4 and m["candidates"] == 5
    assert m["matched_targets"] == 2 and m["matched_targets_double_majority"] == 1
    assert m["fake_candidates"] == 2 and m["duplicate_candidates"] == 1
    assert (m["efficiency"], m["fake_rate"], m["duplicate_rate"]) == (0.5, 0.4, 0.2)
    (pt_bin,) = [b for b in m["efficiency_vs_pt"] if b["lo"] == 2.0]
    assert (pt_bin["particles"], pt_bin["matched"]) == (4, 2)
    vz = {b["lo"]: (b["particles"], b["matched"]) for b in m["efficiency_vs_vz"]}
    assert vz[-50.0] == (1, 1) and vz[0.0] == (2, 1)
    assert sum(p for p, _ in vz.values()) == 3
    strict = evaluate.EvalConfig(min_hits=7)
    m = evaluate.evaluate(toy_event(), labels, strict)
    assert (m["target_particles"], m["matched_targets"]) == (2, 2)
    with pytest.raises(ValueError, match="10 labels for 38 spacepoints"):
        evaluate.evaluate(toy_event(), labels[:10])


@pytest.mark.skipif(REAL is None, reason="shared/data/trackml not present")
def test_truth_labels_are_perfect_on_the_real_event():
    event = trackml.read_event(REAL, 1)
    pid = event.truth["particle_id"].to_numpy()
    _, labels = np.unique(pid, return_inverse=True)
    labels = np.where(pid == 0, -1, labels)
    m = evaluate.evaluate(event, labels)
    assert m["target_particles"] > 20
    assert m["efficiency"] == 1.0 and m["double_majority_efficiency"] == 1.0
    assert m["fake_rate"] == 0.0 and m["duplicate_rate"] == 0.0


@needs_rust
def test_rust_and_python_agree(tmp_path):
    events = rust_tools.simulate(tmp_path / "events", mu=10, events=2)
    labels_dir = tmp_path / "labels"
    rng = np.random.default_rng(3)
    for event_id in trackml.list_events(events):
        event = trackml.read_event(events, event_id)
        pid = event.truth["particle_id"].to_numpy()
        _, labels = np.unique(pid, return_inverse=True)
        # Damage the truth labels: reassign 40% of spacepoints, drop 10%.
        moved = rng.random(len(labels)) < 0.4
        labels[moved] = rng.integers(0, labels.max() + 1, moved.sum())
        labels[rng.random(len(labels)) < 0.1] = -1
        trackml.write_labels(labels_dir, event_id, event.hits["hit_id"], labels)
    out = tmp_path / "rust"
    rust_tools.run(
        rust_tools.EXATRKX, "evaluate", "--events", events, "--labels", labels_dir, "--out", out
    )
    rust = json.loads((out / "metrics.json").read_text())
    total, per_event = evaluate.evaluate_dirs(events, labels_dir)
    assert 0.0 < total["efficiency"] < 1.0 and total["fake_candidates"] > 0
    for key in evaluate.COUNTS:
        assert rust["total"][key] == total[key], key
    for key in ("efficiency", "double_majority_efficiency", "fake_rate", "duplicate_rate"):
        assert rust["total"][key] == pytest.approx(total[key], abs=1e-12), key
    for key in evaluate.TABLES:
        assert rust["total"][key] == total[key], key
    assert [e["event_id"] for e in rust["events"]] == [i for i, _ in per_event]
    paths = evaluate.main(
        ["--events", str(events), "--labels", str(labels_dir), "--plots", str(tmp_path / "png")]
    )
    assert paths == 0
    for name in (key + ".png" for key in evaluate.TABLES):
        assert (tmp_path / "png" / name).read_bytes()[:4] == b"\x89PNG"
