"""The Python reference pipeline: each stage against brute force or hand-built answers, the
parameter parsing, and the command line on the committed fixture models."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from exatrkx import reference

FIXTURES = Path(__file__).resolve().parents[2] / "pipeline" / "tests" / "fixtures"


# --- radius graph ------------------------------------------------------------------------


def brute_force_radius(points: np.ndarray, radius: float, knn: int) -> set[tuple[int, int]]:
    n, dim = points.shape
    r = float(np.float32(radius))
    pairs = set()
    for i in range(n):
        near = []
        for j in range(n):
            if i == j:
                continue
            d2 = 0.0
            for k in range(dim):
                d = float(points[i, k]) - float(points[j, k])
                d2 += d * d
            if d2 < r * r:
                near.append((d2, j))
        for _, j in sorted(near)[:knn]:
            pairs.add((min(i, j), max(i, j)))
    return pairs


def cloud(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    points = rng.uniform(-0.2, 1.2, (n, dim)).astype(np.float32)
    points[1::5] = rng.integers(0, 8, (len(points[1::5]), dim)) * 0.125  # exact ties
    points[5::5] = points[rng.integers(0, 5, len(points[5::5]))]  # duplicates
    return points


@pytest.mark.parametrize("dim", [2, 3, 8, 12])
@pytest.mark.parametrize("knn", [1, 4, 1000])
def test_radius_pairs_equal_brute_force(dim, knn):
    rng = np.random.default_rng(dim * 100 + knn)
    for radius in (0.125, 0.3, 0.7):
        points = cloud(rng, 80, dim)
        a, b = reference.radius_pairs(points, radius, knn)
        got = {(min(i, j), max(i, j)) for i, j in zip(a.tolist(), b.tolist(), strict=True)}
        assert got == brute_force_radius(points, radius, knn)


def test_radius_graph_excludes_the_radius_itself_and_orients_edges():
    points = (np.arange(5, dtype=np.float32) * 0.25).reshape(-1, 1)
    assert reference.radius_pairs(points, 0.25, 10)[0].size == 0
    features = np.zeros((5, 9), np.float32)
    features[:, 0] = [0.5, 0.1, 0.3, 0.3, 0.9]
    edges = reference.radius_graph(points, 0.26, 10, features)
    # pairs 0-1, 1-2, 2-3, 3-4; src has the smaller radius, equal radii by index
    assert edges.tolist() == [[1, 1, 2, 3], [0, 2, 3, 4]]
    assert reference.radius_pairs(np.zeros((1, 3), np.float32), 1.0, 5)[0].size == 0


# --- module map --------------------------------------------------------------------------


def random_map_event(rng: np.random.Generator, n: int = 300, modules: int = 12):
    ids = 700_000_000 + rng.integers(0, modules, n)
    r = np.asarray([40.0, 80.0, 120.0, 120.0])[(ids - 700_000_000) % 4] + rng.uniform(-1, 1, n)
    r[::9] = 80.0  # equal radii: dr == 0 pairs
    phi = rng.uniform(-math.pi, math.pi, n)
    z = rng.uniform(-200, 200, n)
    block = np.stack([r / 1000, phi / math.pi, z / 1000], axis=1)
    features = np.concatenate([block] * 3, axis=1).astype(np.float32)
    rows = []
    for a, b in itertools.product(range(modules), repeat=2):
        if rng.uniform() < 0.4:
            w = [
                rng.uniform(0.5, 3),
                rng.uniform(50, 400),
                rng.uniform(0.005, 0.05),
                rng.uniform(0.5, 2),
            ]
            rows.append(
                [
                    700_000_000 + a,
                    700_000_000 + b,
                    1,
                    -rng.uniform(0, 2),
                    w[0],
                    -w[1],
                    w[1],
                    -w[2],
                    w[2],
                    -w[3],
                    w[3],
                ]
            )
    return features, ids, rows


def test_module_map_graph_equals_all_pairs(tmp_path):
    rng = np.random.default_rng(3)
    features, ids, rows = random_map_event(rng)
    lines = [
        "module_a,module_b,count,dphi_min,dphi_max,z0_min,z0_max,phislope_min,"
        "phislope_max,deta_min,deta_max"
    ]
    lines += [",".join(repr(v) for v in row) for row in rows]
    path = tmp_path / "module_map.csv"
    path.write_text("\n".join(lines) + "\n")
    table = reference.read_module_map(path)
    got = reference.module_map_graph(table, features, ids, batch=500)

    # Every ordered pair at once, windows looked up in a dense (module, module) table.
    n = len(ids)
    p, q = (a.reshape(-1) for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    p, q = p[p != q], q[p != q]
    table = np.full((12, 12, 8), np.nan)
    for row in rows:
        table[row[0] - 700_000_000, row[1] - 700_000_000] = row[3:]
    w = table[ids[p] - 700_000_000, ids[q] - 700_000_000]
    ok = np.ones(len(p), dtype=bool)
    for k, v in enumerate(reference.pair_quantities(features, p, q)):
        ok &= (w[:, 2 * k] <= v) & (v <= w[:, 2 * k + 1])
    r = features[:, 0]
    expected = set()
    for a, b in zip(p[ok].tolist(), q[ok].tolist(), strict=True):
        swap = r[a] > r[b] or (r[a] == r[b] and a > b)
        expected.add((b, a) if swap else (a, b))
    assert len(expected) > 300
    assert [tuple(e) for e in got.T.tolist()] == sorted(expected)


def test_pair_quantities_follow_the_definition():
    features = np.zeros((3, 9), np.float32)
    features[:, :3] = [[0.1, 3.1 / math.pi, 0.01], [0.15, -3.1 / math.pi, 0.03], [0.1, 0.5, 0.05]]
    dphi, z0, slope, deta = reference.pair_quantities(features, np.array([0, 0]), np.array([1, 2]))
    assert dphi[0] == pytest.approx(2 * math.pi - 6.2, abs=1e-5)  # wrapped across +-pi
    assert z0[0] == pytest.approx(10 - 100 * 20 / 50, abs=1e-3)
    assert z0[1] == pytest.approx(10.0, abs=1e-4) and slope[1] == 0.0  # dr == 0
    assert deta[0] == pytest.approx(math.asinh(0.2) - math.asinh(0.1), abs=1e-5)


# --- track building ----------------------------------------------------------------------


def walk(n, edges, min_len=3):
    edge_index = np.array([[e[0] for e in edges], [e[1] for e in edges]], dtype=np.int64).reshape(
        2, -1
    )
    scores = np.array([e[2] for e in edges], dtype=np.float32)
    return reference.walkthrough(n, edge_index, scores, 0.1, 0.6, min_len).tolist()


def test_connected_components_on_hand_built_graphs():
    edges = [(0, 1), (1, 2), (4, 5), (6, 7), (6, 8), (8, 9), (10, 11), (11, 12), (12, 10)]
    edge_index = np.array(edges, dtype=np.int64).T
    assert reference.connected_components(13, edge_index, 3).tolist() == [
        0,
        0,
        0,
        -1,
        -1,
        -1,
        1,
        1,
        1,
        1,
        2,
        2,
        2,
    ]
    assert reference.connected_components(13, edge_index, 1).tolist() == [
        0,
        0,
        0,
        -1,
        1,
        1,
        2,
        2,
        2,
        2,
        3,
        3,
        3,
    ]
    edge_index = np.array([(4, 5), (5, 3), (0, 1), (1, 2)], dtype=np.int64).T
    assert reference.connected_components(6, edge_index, 3).tolist() == [0, 0, 0, 1, 1, 1]
    assert reference.connected_components(0, np.zeros((2, 0), np.int64), 3).tolist() == []


def test_walkthrough_on_hand_built_graphs():
    # simple paths whatever their scores; a short one dropped
    assert walk(7, [(0, 1, 0.05), (1, 2, 0.9), (2, 3, 0.3), (5, 6, 0.9)]) == [
        0,
        0,
        0,
        0,
        -1,
        -1,
        -1,
    ]
    # a fork: the low-score branch is pruned
    fork = [(0, 1, 0.9), (1, 2, 0.8), (2, 3, 0.9), (1, 4, 0.3), (4, 5, 0.9)]
    assert walk(6, fork) == [0, 0, 0, 0, -1, -1]
    # a second edge above the high cut lets the longer branch win
    fork = [(0, 1, 0.9), (1, 2, 0.8), (1, 4, 0.7), (4, 5, 0.9), (5, 6, 0.9)]
    assert walk(7, fork) == [0, 0, -1, -1, 0, 0, 0]
    # a merge: the first start in topological order takes the tail
    merge = [(0, 2, 0.9), (1, 2, 0.9), (2, 3, 0.9), (3, 4, 0.9)]
    assert walk(5, merge) == [0, -1, 0, 0, 0]
    low = [(0, 2, 0.9), (1, 2, 0.9), (2, 3, 0.1), (3, 4, 0.9)]
    assert walk(5, low) == [-1] * 5
    assert walk(5, low, 2) == [0, -1, 0, 1, 1]
    # a cycle is walked once; equal scores: the smaller index
    assert walk(4, [(0, 1, 0.9), (1, 2, 0.9), (2, 3, 0.9), (3, 0, 0.9)]) == [0, 0, 0, 0]
    ties = [(0, 1, 0.5), (0, 2, 0.5), (1, 3, 0.5), (2, 4, 0.5), (5, 6, 0.5)]
    assert walk(7, ties) == [0, 0, -1, 0, -1, -1, -1]


# --- parameters and the whole pipeline ---------------------------------------------------


def test_pbtxt_parameters_in_block_and_list_form():
    text = """
        name: "exatrkx"  # parameters { key: "x" value: { string_value: "y" } }
        parameters { key: "radius" value: { string_value: "0.2" } }
        parameters {
          key: "track_builder"
          value { string_value: "walkthrough" }
        }
        parameters: [ { key: "knn" value: { string_value: "7" } },
                      { key: "other" value: { string_value: "a\\"b" } } ]
    """
    assert reference.parse_pbtxt_parameters(text) == {
        "radius": "0.2",
        "track_builder": "walkthrough",
        "knn": "7",
        "other": 'a"b',
    }


def test_bad_parameters_name_the_key():
    params = reference.PipelineParameters()
    bad = [("radius", "abc"), ("track_builder", "magic"), ("knn", "x"), ("allow_cpu_fallback", "2")]
    bad += [("gnn_refine_cut", "0.1,high"), ("gnn_refine_cut", "0.1,0.2,0.3,0.4")]
    for key, value in bad:
        with pytest.raises(ValueError, match=key):
            params.set(key, value)
    with pytest.raises(ValueError, match="no_such_key"):
        params.set("no_such_key", "1")
    params.set("walk_min_cut", "0.7")
    with pytest.raises(ValueError, match="walk_high_cut"):
        params.validate()
    params = reference.PipelineParameters()
    params.set("gnn_refine_cut", " 0.02, 0.05 ")
    assert params.gnn_refine_cut == [reference._f32("0.02"), reference._f32("0.05")]
    params.set("gnn_refine_cut", "0.02 1.5")
    with pytest.raises(ValueError, match="gnn_refine_cut = 1.5"):
        params.validate()
    params.set("gnn_refine_cut", "off")
    assert params.gnn_refine_cut == [] and reference.gnn_refine_files(params) == []
    params.set("gnn_refine_cut", "0.02,0.05")
    assert reference.gnn_refine_files(params) == ["gnn.pt", "gnn.pt"]
    params.set("gnn_refine_model", "g2.pt")
    assert reference.gnn_refine_files(params) == ["g2.pt", "g2.pt"]
    params.set("gnn_refine_model", "g2.pt, g3.pt")
    assert reference.gnn_refine_files(params) == ["g2.pt", "g3.pt"]
    params.validate()
    params.set("gnn_refine_cut", "0.02")
    with pytest.raises(ValueError, match="2 networks for 1 refining passes"):
        params.validate()
    with pytest.raises(ValueError, match="gnn_refine_model"):
        params.set("gnn_refine_model", "g2.pt,,g3.pt")


def fixture_pipeline(**overrides):
    folder = FIXTURES / "exatrkx"
    params = reference.load_parameters(folder, overrides)
    return reference.ReferencePipeline(folder / "1", params)


def test_fixture_event_gives_tracks_and_tiny_events_none():
    features, ids = reference.load_feature_event(FIXTURES / "events", 1)
    result = fixture_pipeline().run(features, ids)
    assert result.labels.shape == (len(features),)
    assert result.num_tracks >= 10
    assert sorted(set(result.labels.tolist()) - {-1}) == list(range(result.num_tracks))
    sizes = result.graph_sizes
    assert sizes[0] >= sizes[1] >= sizes[2] > 0
    assert set(result.timings) == {"embedding", "graph", "filter", "gnn", "tracks"}
    for n in (0, 1, 2):
        assert fixture_pipeline().run(features[:n], ids[:n]).labels.tolist() == [-1] * n
    with pytest.raises(ValueError, match="module ids"):
        fixture_pipeline(graph_construction="module_map").run(features, None)


def test_command_line_writes_labels_for_npy_and_csv_events(tmp_path):
    out = tmp_path / "out"
    assert (
        reference.main(
            [
                "--events",
                str(FIXTURES / "events"),
                "--model-repo",
                str(FIXTURES),
                "--out",
                str(out),
                "--param",
                "track_builder=walkthrough",
                "--summary",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    labels = np.load(out / "event000000001-labels.npy")
    features, ids = reference.load_feature_event(FIXTURES / "events", 1)
    expected = fixture_pipeline(track_builder="walkthrough").run(features, ids).labels
    assert np.array_equal(labels, expected)
    assert (tmp_path / "s.json").read_text().count("spacepoints") == 1

    # A TrackML-style event: spacepoints on one straight line from the origin form a track.
    csv = tmp_path / "csv"
    csv.mkdir()
    rows = ["hit_id,x,y,z,volume_id,layer_id,module_id"]
    for k, radius in enumerate(features[:40, 0] * 1000):
        angle = math.pi * float(features[k, 1])
        rows.append(
            f"{k + 1},{radius * math.cos(angle)},{radius * math.sin(angle)},"
            f"{float(features[k, 2]) * 1000},8,2,{k}"
        )
    (csv / "event000000007-hits.csv").write_text("\n".join(rows) + "\n")
    assert (
        reference.main(
            ["--events", str(csv), "--model-repo", str(FIXTURES / "exatrkx"), "--out", str(out)]
        )
        == 0
    )
    written = (out / "event000000007-labels.csv").read_text().splitlines()
    assert written[0] == "hit_id,track_id" and len(written) == 41
