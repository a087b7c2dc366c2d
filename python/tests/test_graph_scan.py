"""`exatrkx.graph_scan`: the truth edges it counts as kept are those of the radius graph."""

import pytest
import torch

from exatrkx import data, graph_scan, trackml
from exatrkx.export import save_scripted, script, torch_threads
from exatrkx.models.graph import radius_graph
from exatrkx.models.networks import EmbeddingNet

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy_events")
    data.write_toy_events(directory, 2, particles_per_event=40, seed=5)
    torch.manual_seed(4)
    return directory, EmbeddingNet(9, 16, 2, 3).eval()


def test_counts_match_the_radius_graph(toy):
    directory, net = toy
    sample = data.event_sample(trackml.read_event(directory, 1))
    with torch.no_grad(), torch_threads(1):
        emb = net(sample["x"])
    a, b = sample["truth_edges"][:, sample["truth_target"]]
    d = (emb[a] - emb[b]).norm(dim=1)
    radius = float(d.median())  # half the truth edges beyond the radius
    n = sample["x"].shape[0]
    truth = torch.minimum(a, b) * n + torch.maximum(a, b)
    knn = (1, 3, 8, n)
    with torch_threads(1):
        counts = graph_scan.scan_sample(net, sample, radius, knn)
    assert sum(counts["total"]) == len(a)
    kept = []
    for k in knn:
        g = radius_graph(emb, radius, k, sample["x"][:, 0])
        pairs = torch.minimum(g[0], g[1]) * n + torch.maximum(g[0], g[1])
        kept.append(int(torch.isin(truth, pairs).sum()))
        assert sum(counts["kept"][k]) == kept[-1], k
    # the cap matters at small k, and without a cap the radius alone decides
    assert kept[0] < kept[-1] == int((d < radius).sum())
    rows = graph_scan.table([counts, counts], knn)
    assert [r["knn"] for r in rows] == list(knn)
    assert rows[-1]["efficiency"] == pytest.approx(kept[-1] / len(a))


def test_command_prints_the_table(toy, tmp_path, capsys):
    directory, net = toy
    path = tmp_path / "embed.pt"
    save_scripted(script(net), path)
    argv = ["--embedding", str(path), "--radius", "0.5", "--events", str(directory)]
    with torch_threads(1):
        assert graph_scan.main(argv + ["--knn", "4", "16"]) == 0
    out = capsys.readouterr().out
    assert "event 1:" in out and "event 2:" in out
    lines = [line.split() for line in out.splitlines() if line.split()[:1] in (["4"], ["16"])]
    assert len(lines) == 2
    # a larger cap never keeps fewer edges
    assert float(lines[0][1]) <= float(lines[1][1])
