"""Track-quality stage: candidate rows (the same hand-built cases as the Rust unit tests), the
walkthrough's second pass, the selection, the network's export and its training command."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from exatrkx import data, reference, track_quality, trackml, train
from exatrkx.export import load, torch_threads
from exatrkx.models import TrackQualityNet
from exatrkx.models.lightning import TrackQualityModule
from exatrkx.paths import REPO_ROOT

FIXTURE_MODEL = REPO_ROOT / "pipeline" / "tests" / "fixtures" / "exatrkx"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def line_event():
    """Three spacepoints on a straight line from the beam line (r = 100, 200, 300 mm at phi 0,
    z = r / 10; the third a strip spacepoint) and one outside the track."""
    rows = []
    for k, r in enumerate(np.float32([0.1, 0.2, 0.3, 0.5])):
        own = [r, 0.0, r / np.float32(10)]
        cluster = [r, 0.001, r / np.float32(10)] if k == 2 else own
        rows.append(own + cluster + own)
    return np.array(rows, dtype=np.float32)


def test_rows_follow_the_definitions():
    x = line_event()
    labels = np.array([0, 0, 0, -1])
    edges = np.array([[0, 1, 1, 2], [1, 2, 0, 3]])
    scores = np.float32([0.9, 0.8, 0.95, 0.3])
    rows = track_quality.track_features(x, labels, np.array([True]), edges, scores)
    # no overlaps (100 mm apart); spacepoint 2's best inside (0.8) beats its leaving 0.3
    want = [3, 0, 0, 0, 0, math.asinh(0.1), 0.8, 0.875, 0.95, 1 / 3, 1, 0.3, 0.1, 0, 0, 0, 0, 0.8]
    np.testing.assert_allclose(rows[0], want, atol=1e-5)
    first = track_quality.track_features(x, labels, np.array([False]), edges[:, :3], scores[:3])
    assert first[0, 10:13].tolist() == [0.0, 0.0, 0.0]
    # spacepoint 3 moved onto a module overlap of 2 (2 mm out in r, 3 mm in z), in the track
    x[3, [0, 2, 6, 8]] = np.float32([0.302, 0.033, 0.302, 0.033])
    chain = np.array([[0, 1, 2], [1, 2, 3]])
    rows = track_quality.track_features(
        x, np.zeros(4, np.int64), np.array([False]), chain, np.float32([0.9, 0.8, 0.7])
    )
    assert rows[0, 15] == pytest.approx(1 / 3) and rows[0, 16:].tolist() == [0.0, np.float32(0.7)]
    rows = track_quality.track_features(
        x, np.array([0, 0, 0, -1]), np.array([False]), chain, np.float32([0.9, 0.6, 0.7])
    )
    assert rows[0, 16] == pytest.approx(1 / 3) and rows[0, 17] == np.float32(0.6)
    assert rows[0, 13] > 0 or rows[0, 14] > 0


def test_a_curved_track_has_its_curvature_and_a_missing_edge_scores_zero():
    radius = 1000.0 / 0.6  # pT 1 GeV in 2 T
    rows = []
    for r in (100.0, 300.0, 500.0, 700.0):
        own = [r / 1000.0, math.asin(r / (2 * radius)) / math.pi, 0.0]
        rows.append(own * 3)
    x = np.array(rows, dtype=np.float32)
    out = track_quality.track_features(
        x,
        np.zeros(4, np.int64),
        np.array([False]),
        np.array([[0, 1], [1, 2]]),
        np.float32([0.6, 0.7]),
    )[0]
    assert out[1] == pytest.approx(1.0, abs=1e-3) and out[2] < 1e-3
    assert (out[6], out[8]) == (0.0, np.float32(0.7))
    assert out[7] == pytest.approx(1.3 / 3, abs=1e-6)


def test_helix_fit_gives_back_a_helix():
    # pT 2 GeV, anticlockwise from the origin, cot(theta) 0.5, z0 = 12 mm
    big_r = 2.0 / 0.6 * 1000
    s = np.array([50.0, 120.0, 250.0, 400.0, 600.0])
    angle = s / big_r
    x = (big_r * np.sin(angle)).tolist()
    y = (big_r * (1 - np.cos(angle))).tolist()
    z = (12.0 + 0.5 * s).tolist()
    pt, eta, d0, z0, chi2_ndf, max_t, max_z = track_quality.fit_helix(x, y, z)
    assert pt == pytest.approx(2.0, rel=1e-9) and eta == pytest.approx(math.asinh(0.5))
    assert abs(d0) < 1e-9 and z0 == pytest.approx(12.0) and chi2_ndf < 1e-12
    assert max_t < 1e-9 and max_z < 1e-9
    # one spacepoint 1 mm off in z: the largest z residual is most of it
    z[2] += 1.0
    assert 0.5 < track_quality.fit_helix(x, y, z)[6] < 1.0
    # collinear points: a straight track
    assert track_quality.fit_helix([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0])[0] == math.inf


def test_matched_candidates_need_a_strict_majority():
    pid = np.array([7, 7, 8, 7, 8, 0, 9, 9, 0, 0], dtype=np.uint64)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, -1])
    # track 0: 2 of 3 from 7; track 1: 1 + 1 (a tie); track 2: 2 of 4 from 9 (noise matches none)
    assert track_quality.matched_candidates(pid, labels, 3).tolist() == [True, False, False]


def test_second_pass_and_selection_match_the_rust_definitions():
    edges = [(0, 1, 0.2), (1, 2, 0.2), (1, 3, 0.15), (4, 5, 0.9), (5, 6, 0.9), (6, 7, 0.9)]
    edges.append((5, 2, 0.05))
    index = np.array([(a, b) for a, b, _ in edges]).T
    w = np.float32([s for *_, s in edges])
    params = reference.PipelineParameters(
        track_builder="walkthrough", walk_min_cut=0.4, walk_high_cut=0.7, min_track_length=3
    )
    labels, second = reference.walkthrough_passes(8, index, w, params)
    assert labels.tolist() == [-1, -1, -1, -1, 0, 0, 0, 0] and second.tolist() == [False]
    params.set("walk_rescue_cut", "0.1")
    labels, second = reference.walkthrough_passes(8, index, w, params)
    assert labels.tolist() == [0, 0, 0, -1, 1, 1, 1, 1] and second.tolist() == [True, False]

    class FirstRowOnly(torch.nn.Module):
        def forward(self, x):
            return torch.where(x[:, 10] > 0.5, 5.0, -5.0)

    rows = np.zeros((2, track_quality.NUM_TRACK_FEATURES), np.float32)
    rows[:, 10] = second
    kept = reference.select_tracks(FirstRowOnly(), rows, labels, 0.5)
    assert kept.tolist() == [0, 0, 0, -1, -1, -1, -1, -1]


def test_mutual_best_chains_match_the_rust_definitions():
    # the example of track_building.rs: a particle scored low everywhere, a spacepoint whose
    # best incoming edge is not its neighbour's best outgoing one, a clear first-pass track
    edges = [(0, 1, 0.2), (1, 2, 0.25), (2, 3, 0.2), (1, 4, 0.1), (5, 2, 0.15)]
    edges += [(6, 7, 0.3), (8, 7, 0.35), (7, 9, 0.3), (9, 10, 0.5), (10, 11, 0.9), (11, 12, 0.9)]
    index = np.array([(a, b) for a, b, _ in edges]).T
    w = np.float32([s for *_, s in edges])
    params = reference.PipelineParameters(
        track_builder="walkthrough", walk_min_cut=0.5, walk_high_cut=0.7, min_track_length=3
    )
    labels, second = reference.walkthrough_passes(13, index, w, params)
    assert labels.tolist() == [-1] * 10 + [0] * 3 and second.tolist() == [False]
    params.set("walk_chain_cut", "0.12")
    labels, second = reference.walkthrough_passes(13, index, w, params)
    assert labels.tolist() == [0, 0, 0, 0, -1, -1, -1, 1, 1, 1, 2, 2, 2]
    assert second.tolist() == [True, True, False]
    params.set("walk_chain_cut", "0.22")
    labels, second = reference.walkthrough_passes(13, index, w, params)
    assert labels.tolist() == [-1] * 7 + [0, 0, 0, 1, 1, 1] and second.tolist() == [True, False]
    ties = np.array([[0, 0, 1, 2], [1, 2, 3, 3]])
    chains = reference.mutual_best_chains(4, ties, np.float32([0.3] * 4), 0.1, 3)
    assert chains.tolist() == [0, 0, -1, 0]


def test_parameters_switch_the_stage_on_and_off():
    p = reference.PipelineParameters()
    assert p.walk_rescue_cut is None and p.track_model == ""
    for key, value in (("walk_rescue_cut", "0.2"), ("track_model", "t.pt"), ("track_cut", "0.8")):
        p.set(key, value)
    assert (p.walk_rescue_cut, p.track_model, p.track_cut) == (
        np.float32(0.2),
        "t.pt",
        np.float32(0.8),
    )
    p.set("walk_chain_cut", "0.1")
    assert p.walk_chain_cut == np.float32(0.1)
    p.set("walk_rescue_cut", "none")
    p.set("walk_chain_cut", "off")
    p.set("track_model", "off")
    assert p.walk_rescue_cut is None and p.walk_chain_cut is None and p.track_model == ""
    p.set("track_cut", "1.0")
    with pytest.raises(ValueError, match="track_cut"):
        p.validate()


def test_network_scripts_and_its_loss_goes_down(tmp_path):
    torch.manual_seed(0)
    rows = torch.randn(512, 18)
    target = (rows[:, 6] + 0.5 * rows[:, 11] > 0).float()
    module = TrackQualityModule(num_track_features=18, hidden=16)
    module.net.set_standardisation(rows)
    with torch.no_grad():
        before = float(torch.nn.functional.binary_cross_entropy_with_logits(module(rows), target))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        for _ in range(60):
            loss = module.training_step((rows, target), 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = float(torch.nn.functional.binary_cross_entropy_with_logits(module(rows), target))
    assert after < 0.5 * before
    from exatrkx.export import export

    path = export(module.net.eval(), tmp_path / "tracks.pt", rows[:50])
    scripted = load(path)
    assert scripted.num_track_features() == 18
    torch.testing.assert_close(scripted(rows), module.net(rows))
    with pytest.raises(Exception, match="18"):
        scripted(rows[:, :13])
    assert isinstance(TrackQualityNet(), torch.nn.Module)


def write_scored_edges(events):
    """`-edges.npy` and `-scores.npy` beside each toy event as `exatrkx run --edges-out`
    writes them: consecutive truth pairs scored high, random pairs low, a few random pairs
    high (fakes to learn)."""
    gen = np.random.default_rng(3)
    for event_id in trackml.list_events(events):
        s = data.event_sample(trackml.read_event(events, event_id))
        n = s["x"].shape[0]
        true = s["truth_pairs"].numpy()
        rand = gen.integers(0, n, (2, 2 * n))
        pairs = np.concatenate([true, rand], axis=1)
        radius = s["x"][:, 0].numpy()
        a, b = pairs
        inner = np.where(radius[a] <= radius[b], a, b)
        outer = np.where(radius[a] <= radius[b], b, a)
        ok = inner != outer
        edges = np.stack([inner, outer])[:, ok]
        scores = np.concatenate(
            [gen.uniform(0.5, 1.0, true.shape[1]), gen.uniform(0.0, 0.95, rand.shape[1]) ** 3]
        )[ok].astype(np.float32)
        prefix = trackml.event_prefix(event_id)
        np.save(events / f"{prefix}-edges.npy", edges.astype(np.int64))
        np.save(events / f"{prefix}-scores.npy", scores)


def test_tracks_command_trains_chooses_a_cut_and_exports(tmp_path):
    events = tmp_path / "events"
    data.write_toy_events(events, 4, particles_per_event=30, seed=12)
    out = tmp_path / "out"
    args = ["tracks", "--events", str(events), "--out", str(out), "--max-epochs", "3"]
    args += ["--val-fraction", "0.25", "--test-fraction", "0.25", "--track-hidden", "8"]
    args += ["--model-folder", str(FIXTURE_MODEL), "--param", "track_builder=walkthrough"]
    args += ["--param", "gnn_cut=0.01", "--param", "walk_min_cut=0.3"]
    args += ["--param", "walk_high_cut=0.6", "--param", "walk_rescue_cut=0.1"]
    with pytest.raises(FileNotFoundError, match="event000000001-edges.npy is missing"):
        train.main(args)
    write_scored_edges(events)
    assert train.main(args) == 0
    result = json.loads((out / "metrics.json").read_text())
    section = result["tracks"]
    assert result["parameters"]["track_model"] == "tracks.pt"
    assert result["parameters"]["track_cut"] in train.TRACK_CUTS
    assert section["track_building"]["walk_rescue_cut"] == pytest.approx(0.1)
    assert {"efficiency", "fake_rate"} <= set(section["test"])
    assert len(section["cut_scan"]) == len(train.TRACK_CUTS)
    assert load(out / "tracks.pt").num_track_features() == track_quality.NUM_TRACK_FEATURES


def test_track_cut_rules():
    scan = [
        {"track_cut": 0.5, "efficiency": 0.945, "fake_rate": 0.015},
        {"track_cut": 0.7, "efficiency": 0.93, "fake_rate": 0.008},
        {"track_cut": 0.8, "efficiency": 0.90, "fake_rate": 0.005},
    ]
    assert train.choose_track_cut(scan, None)[0]["track_cut"] == 0.5
    assert train.choose_track_cut(scan, 0.01)[0]["track_cut"] == 0.7
    assert train.choose_track_cut(scan, 0.001)[0]["track_cut"] == 0.5  # none reaches it
