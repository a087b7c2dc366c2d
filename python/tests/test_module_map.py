"""The module map: built from truth, saved in the DESIGN.md format, and its graph."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from exatrkx import data, module_map, trackml
from exatrkx.export import torch_threads
from exatrkx.models.graph import canonical_edges, contains
from exatrkx.paths import shared_trackml_dir

REAL = shared_trackml_dir()


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # tiny tensors; spinning threads on a busy machine cost 100x
        yield


@pytest.fixture(scope="module")
def toy_samples(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy")
    ids = data.write_toy_events(directory, 3, particles_per_event=25, seed=5)
    return [data.event_sample(trackml.read_event(directory, i)) for i in ids]


def assert_map_covers_truth(samples, table):
    for s in samples:
        graph = module_map.module_map_graph(s["x"].numpy(), s["module_id"].numpy(), table)
        found = contains(graph, s["truth_edges"], s["x"].shape[0])
        assert s["truth_edges"].shape[1] > 0
        assert bool(found.all()), f"{int((~found).sum())} truth edges missed"
        # the edge convention: oriented by radius, sorted, unique, no self-loops
        r = s["x"][:, 0]
        assert bool((r[graph[0]] <= r[graph[1]]).all())
        assert torch.equal(graph, canonical_edges(graph[0], graph[1], r))


def test_every_true_consecutive_pair_passes_its_own_map(toy_samples):
    table = module_map.build_module_map(toy_samples)
    assert list(table.columns) == module_map.COLUMNS
    assert table["count"].sum() == sum(s["truth_pairs"].shape[1] for s in toy_samples)
    assert_map_covers_truth(toy_samples, table)


@pytest.mark.skipif(REAL is None, reason="shared/data/trackml not present")
def test_real_event_truth_passes_its_own_map():
    sample = data.event_sample(trackml.read_event(REAL, 1))
    table = module_map.build_module_map([sample])
    assert_map_covers_truth([sample], table)


def test_pt_threshold_keeps_fast_particles_only(toy_samples):
    s = toy_samples[0]
    table = module_map.build_module_map([s], pt_min=1.0)
    fast = s["pt"][s["truth_pairs"][0]] > 1.0
    assert 0 < table["count"].sum() == int(fast.sum()) < s["truth_pairs"].shape[1]


def test_csv_round_trips_exactly(tmp_path, toy_samples):
    table = module_map.build_module_map(toy_samples)
    path = tmp_path / "module_map.csv"
    module_map.save_module_map(table, path)
    header = path.read_text().splitlines()[0]
    assert header == (
        "module_a,module_b,count,dphi_min,dphi_max,z0_min,z0_max,"
        "phislope_min,phislope_max,deta_min,deta_max"
    )
    back = module_map.load_module_map(path)
    assert back.equals(table)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="header must be"):
        module_map.load_module_map(tmp_path / "bad.csv")


def test_quantities_follow_the_definition():
    # p at phi = 0.99 pi, q at -0.99 pi: dphi wraps to +0.02 pi; q2 on the same radius
    x = np.array([[0.1, 0.99, 0.05], [0.2, -0.99, 0.25], [0.1, 0.5, 0.3]], dtype=np.float32)
    geo = module_map.cylindrical(x)
    q = module_map.doublet_quantities(geo, np.array([0, 0]), np.array([1, 2]))
    phi = math.pi * x[:, 1].astype(np.float64)
    assert q["dphi"][0] == pytest.approx(phi[1] + 2 * math.pi - phi[0])
    assert q["dphi"][0] == pytest.approx(0.02 * math.pi, rel=1e-5)
    r = 1000.0 * x[:, 0].astype(np.float64)
    z = 1000.0 * x[:, 2].astype(np.float64)
    assert q["z0"][0] == pytest.approx(z[0] - r[0] * (z[1] - z[0]) / (r[1] - r[0]))
    assert q["phislope"][0] == pytest.approx(q["dphi"][0] / (r[1] - r[0]))
    assert q["deta"][0] == pytest.approx(math.asinh(z[1] / r[1]) - math.asinh(z[0] / r[0]))
    # dr == 0: z0 is z_p and the slope is 0
    assert q["z0"][1] == z[0] and q["phislope"][1] == 0.0


def test_graph_matches_pairwise_loop(toy_samples):
    s = toy_samples[1]
    table = module_map.build_module_map(toy_samples[:1])
    x, mid = s["x"].numpy(), s["module_id"].numpy()
    geo = module_map.cylindrical(x)
    want = set()
    for row in table.itertuples():
        on_a = np.nonzero(mid == row.module_a)[0]
        on_b = np.nonzero(mid == row.module_b)[0]
        for p in on_a:
            for q in on_b:
                if p == q:
                    continue
                v = module_map.doublet_quantities(geo, np.array([p]), np.array([q]))
                if all(
                    getattr(row, f"{k}_min") <= v[k][0] <= getattr(row, f"{k}_max")
                    for k in module_map.QUANTITIES
                ):
                    a, b = (p, q) if (x[p, 0], p) < (x[q, 0], q) else (q, p)
                    want.add((int(a), int(b)))
    for chunk in (7, 1 << 22):  # several chunks and one
        got = module_map.module_map_graph(x, mid, table, max_pairs_per_chunk=chunk)
        assert [tuple(e) for e in got.T.tolist()] == sorted(want)
    assert module_map.module_map_graph(x[:0], mid[:0], table).shape == (2, 0)
