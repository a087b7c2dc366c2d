"""`exatrkx.edge_scan`: the shares it reports are those of the truth edges in the files."""

import numpy as np
import pytest

from exatrkx import data, edge_scan, trackml


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy_events")
    data.write_toy_events(directory, 1, particles_per_event=60, seed=7)
    return directory


def write_edges(directory, event_id, edges, scores):
    prefix = trackml.event_prefix(event_id)
    np.save(directory / f"{prefix}-edges.npy", np.asarray(edges, dtype=np.int64))
    np.save(directory / f"{prefix}-scores.npy", np.asarray(scores, dtype=np.float32))


def test_shares_of_the_written_truth_edges(toy, capsys):
    sample = data.event_sample(trackml.read_event(toy, 1))
    a, b = sample["truth_edges"][:, sample["truth_target"]].numpy()
    m = len(a)
    assert m >= 8
    half, quarter = m // 2, m // 4
    # half of the truth edges in the graph (every other one reversed), the first quarter scored
    # high; fake edges between spacepoints of different particles around them
    src = np.where(np.arange(half) % 2 == 0, a[:half], b[:half])
    dst = np.where(np.arange(half) % 2 == 0, b[:half], a[:half])
    pid = sample["particle_id"].numpy()
    rng = np.random.default_rng(0)
    fa, fb = rng.integers(0, len(pid), (2, 400))
    fake = (pid[fa] != pid[fb]) | (pid[fa] == 0)
    edges = np.stack([np.concatenate([src, fa[fake]]), np.concatenate([dst, fb[fake]])])
    scores = np.concatenate(
        [np.where(np.arange(half) < quarter, 0.9, 0.1), np.full(fake.sum(), 0.99)]
    )
    write_edges(toy, 1, edges, scores)
    part = edge_scan.truth_edge_scores(sample, *edge_scan.read_scored_edges(toy, 1))
    assert (part["score"][:quarter] == pytest.approx(0.9)) and (part["score"][half:] == -1).all()
    rows = edge_scan.table([part], 0.5)
    total = rows[-1]["cells"][-1]
    assert total["edges"] == m
    assert total["in_graph"] == pytest.approx(half / m)
    assert total["kept"] == pytest.approx(quarter / m)
    # the bins split the edges without loss
    assert sum(r["cells"][-1]["edges"] for r in rows[:-1]) == m
    assert sum(c["edges"] for c in rows[-1]["cells"][:-1]) == m
    assert edge_scan.main(["--events", str(toy), "--cut", "0.5"]) == 0
    assert f"{half / m:.3f} / {quarter / m:.3f} ({m})" in capsys.readouterr().out


def test_mismatched_files_are_refused(toy):
    write_edges(toy, 1, np.zeros((2, 5)), np.zeros(4))
    with pytest.raises(ValueError, match="scores"):
        edge_scan.read_scored_edges(toy, 1)
