"""Networks, their TorchScript exports and the graph helpers."""

import zipfile

import pytest
import torch

from exatrkx.export import export, rebuild, rescript, torch_threads
from exatrkx.models import EmbeddingNet, FilterNet, build_gnn
from exatrkx.models.cost import matmul_flops, stage_costs, synthetic_inputs
from exatrkx.models.graph import canonical_edges, radius_graph
from exatrkx.models.layers import PairMLP

EDGE_NETS = {
    "filter": lambda: FilterNet(hidden=32, layers=2),
    "gnn-plain": lambda: build_gnn("plain", hidden=16, iterations=2),
    "gnn-plain-3col": lambda: build_gnn("plain", hidden=16, iterations=2, node_columns=3),
    "gnn-hetero": lambda: build_gnn("hetero", hidden=16, iterations=2),
}


# the backend loads TorchScript: deprecated in torch, still what libtorch runs without Python
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # tiny tensors; spinning threads on a busy machine cost 100x
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_embedding_export_matches_python(tmp_path):
    net = EmbeddingNet(hidden=32, layers=2, emb_dim=8).eval()
    x, _ = synthetic_inputs(200, 0)
    path = export(net, tmp_path / "embed.pt", x)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
        assert loaded(x[:1]).shape == (1, 8)
    assert loaded.num_features() == 9
    assert loaded.embedding_dim() == 8
    assert not any(p.requires_grad for p in loaded.parameters())
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in loaded.parameters())
    # unit-norm output: radii mean the same for every training
    assert torch.allclose(loaded(x).norm(dim=1), torch.ones(200), atol=1e-5)


@pytest.mark.parametrize("name", sorted(EDGE_NETS))
def test_edge_model_export_matches_python(tmp_path, name):
    net = EDGE_NETS[name]().eval()
    x, edge_index = synthetic_inputs(300, 900)
    path = export(net, tmp_path / f"{name}.pt", x, edge_index)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        want = net(x, edge_index)
        got = loaded(x, edge_index)
        assert got.shape == (900,) and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=1e-6)
        empty = torch.zeros(2, 0, dtype=torch.long)
        assert loaded(x, empty).shape == (0,)
        assert loaded(x[:1], empty).shape == (0,)
        assert loaded(x, edge_index[:, :1]).shape == (1,)
        # a backend may convert the module to bf16: it still takes and gives fp32
        loaded.to(torch.bfloat16)
        low = loaded(x, edge_index)
        assert low.dtype == torch.float32
        assert (low - want).abs().max() < 0.1 * want.abs().max() + 0.05
    assert loaded.num_features() == 9


@pytest.mark.parametrize("name", sorted(EDGE_NETS))
def test_chunked_cpu_inference_is_the_training_function(tmp_path, name):
    # inference runs per-edge layers in chunks (and the filter's first layer per spacepoint):
    # the same logits as the training forward, chunked or whole, in Python and scripted
    net = EDGE_NETS[name]()
    net.edge_chunk = 700
    x, edge_index = synthetic_inputs(400, 5000)
    with torch.no_grad():
        want = net.train()(x, edge_index)
        chunked = net.eval()(x, edge_index)
        net.edge_chunk = 0
        whole = net(x, edge_index)
        net.edge_chunk = 700
    assert torch.allclose(chunked, want, atol=1e-5)
    assert torch.allclose(whole, want, atol=1e-5)
    # with autograd recording, eval mode still gives gradients (the GNN runs whole then)
    net.zero_grad()
    net(x, edge_index).sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    loaded = torch.jit.load(str(export(net, tmp_path / "net.pt", x, edge_index)))
    assert loaded.edge_chunk == 700
    with torch.no_grad():
        assert torch.allclose(loaded(x, edge_index), want, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FilterNet(hidden=24, layers=3, activation="silu"),
        lambda: build_gnn("plain", hidden=8, iterations=3, node_columns=3, activation="tanh"),
        lambda: build_gnn("hetero", hidden=16, iterations=2, layers=3),
    ],
)
def test_rescript_rebuilds_the_network_from_its_file(tmp_path, make):
    net = make().eval()
    x, edge_index = synthetic_inputs(300, 3000)
    old = export(net, tmp_path / "old.pt", x, edge_index)
    rebuilt = rebuild(old)
    assert type(rebuilt) is type(net)
    assert repr(rebuilt) == repr(net)
    new = rescript(old, tmp_path / "new.pt")
    with torch.no_grad():
        assert torch.allclose(
            torch.jit.load(str(new))(x, edge_index), net(x, edge_index), atol=1e-5
        )
    # in place, as the model card's command runs it
    assert rescript(old, old) == old and not (tmp_path / "old.pt.new").exists()


def test_rescript_refuses_other_files(tmp_path):
    net = EmbeddingNet(hidden=16, layers=2, emb_dim=4).eval()
    x, _ = synthetic_inputs(50, 0)
    path = export(net, tmp_path / "embed.pt", x)
    with pytest.raises(ValueError, match="not a filter or GNN"):
        rescript(path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_wrong_inputs_name_the_problem():
    net = torch.jit.script(FilterNet(hidden=8, layers=1).eval())
    x, edge_index = synthetic_inputs(10, 5)
    with pytest.raises(Exception, match=r"x must be \[N, 9\]"):
        net(x[:, :3], edge_index)
    with pytest.raises(Exception, match="int64"):
        net(x, edge_index.int())
    with pytest.raises(Exception, match=r"edge_index must be \[2, E\]"):
        net(x, edge_index[:1])


def test_pair_mlp_equals_mlp_on_concatenation():
    pair = PairMLP(8, 5, [16, 3], output_activation=False)
    h = torch.randn(20, 8)
    e = torch.randn(30, 5)
    src, dst = torch.randint(0, 20, (2, 30))
    weight = torch.cat([pair.src.weight, pair.dst.weight, pair.edge.weight], 1)
    want = pair.rest(
        torch.nn.functional.linear(torch.cat([h[src], h[dst], e], 1), weight, pair.edge.bias)
    )
    assert torch.allclose(pair(h, e, src, dst), want, atol=1e-5)


def test_hetero_gnn_reads_strip_clusters_only():
    net = build_gnn("hetero", hidden=16, iterations=2).eval()
    plain = build_gnn("plain", hidden=16, iterations=2, node_columns=3).eval()
    x, edge_index = synthetic_inputs(300, 900)
    pixel = x[:, 0] <= 0.2
    assert 0 < int(pixel.sum()) < 300
    with torch.no_grad():
        base = net(x, edge_index)
        padded = x.clone()
        padded[pixel, 3:] += 0.3
        assert torch.equal(net(padded, edge_index), base)
        moved = x.clone()
        moved[~pixel, 3:] += 0.01
        assert (net(moved, edge_index) - base).abs().max() > 1e-4
        # the 3-column plain model ignores the clusters entirely
        assert torch.equal(plain(moved, edge_index), plain(x, edge_index))
        # mixed edges given in the other orientation reach the same encoders
        assert net(x, edge_index.flip(0)).shape == (900,)


def test_unknown_gnn_model_is_refused():
    with pytest.raises(ValueError, match="plain.*hetero"):
        build_gnn("transformer")


def brute_force_radius_graph(emb, radius, knn, r):
    """The definition of docs/DESIGN.md, written out with Python loops."""
    n, dim = emb.shape
    e = emb.double().tolist()
    pairs = set()
    for i in range(n):
        near = []
        for j in range(n):
            if j == i:
                continue
            d2 = 0.0
            for k in range(dim):
                d = e[i][k] - e[j][k]
                d2 += d * d
            if d2 < radius * radius:
                near.append((d2, j))
        for _, j in sorted(near)[:knn]:
            a, b = (i, j) if (r[i], i) < (r[j], j) else (j, i)
            pairs.add((a, b))
    return sorted(pairs)


@pytest.mark.parametrize("knn", [1, 3, 100])
def test_radius_graph_matches_definition(knn):
    emb = torch.randn(120, 4)
    emb[7] = emb[3]  # a zero distance and ties
    r = torch.rand(120)
    r[10] = r[11]  # equal radii: the smaller index is src
    got = radius_graph(emb, 1.0, knn, r)
    assert got.dtype == torch.int64 and got.shape[0] == 2
    assert [tuple(p) for p in got.T.tolist()] == brute_force_radius_graph(emb, 1.0, knn, r.tolist())


def test_canonical_edges_orient_dedupe_sort():
    r = torch.tensor([0.5, 0.1, 0.3, 0.3])
    src = torch.tensor([0, 1, 0, 3, 2, 2])
    dst = torch.tensor([1, 0, 2, 2, 3, 2])
    got = canonical_edges(src, dst, r).T.tolist()
    assert got == [[1, 0], [2, 0], [2, 3]]


def test_costs_grow_with_the_event():
    gnn = build_gnn("plain", hidden=16, iterations=2)
    small = matmul_flops(gnn, 1000, 3000)
    assert matmul_flops(gnn, 2000, 6000) == pytest.approx(2 * small, rel=1e-3)
    # edges cost: the per-edge part of the interaction network is not zero
    assert matmul_flops(gnn, 1000, 6000) > small
    costs = stage_costs({"embedding": EmbeddingNet(), "gnn": gnn}, 100, 0, 300)
    assert costs["gnn"]["parameters"] == sum(p.numel() for p in gnn.parameters())
    assert costs["embedding"]["gflops"] > 0


def test_synthetic_inputs_are_oriented():
    x, edge_index = synthetic_inputs(50, 200)
    assert bool((x[edge_index[0], 0] <= x[edge_index[1], 0]).all())
    assert x.shape == (50, 9) and edge_index.dtype == torch.int64


def test_committed_models_hold_no_machine_paths():
    """Committed TorchScript files carry no debug information (absolute source paths of the
    exporting machine), and still load and run."""
    from exatrkx import export, paths

    files = sorted(paths.REPO_ROOT.glob("model_repository/*/1/*.pt"))
    files += sorted(paths.REPO_ROOT.glob("pipeline/tests/fixtures/*/1/*.pt"))
    assert len(files) >= 8
    for path in files:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            assert not [n for n in names if n.endswith(".debug_pkl")], path
            blob = b"".join(archive.read(n) for n in names)
        assert str(paths.REPO_ROOT).encode() not in blob, path
        loaded = export.load(path)
        if path.name == "tracks.pt":
            assert loaded.num_track_features() == 18
        else:
            assert loaded.num_features() == 9


def test_export_strips_debug_info(tmp_path):
    from exatrkx import export

    net = FilterNet(hidden=8, layers=1)
    x = torch.rand(20, 9)
    edges = torch.tensor([[0, 1, 2], [3, 4, 5]])
    path = export.export(net, tmp_path / "filter.pt", x, edges)
    with zipfile.ZipFile(path) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".debug_pkl")]
    with torch.no_grad():
        assert torch.allclose(export.load(path)(x, edges), net.eval()(x, edges), atol=1e-6)
