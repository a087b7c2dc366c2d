"""Training: truth, splits, each stage's loss going down on tiny events, and `all` end to end."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from exatrkx import data, metrics, trackml, train
from exatrkx.export import torch_threads
from exatrkx.models.graph import (
    canonical_edges,
    contains,
    edge_labels,
    phi_sector_edges,
    phi_sector_sample,
    radius_graph,
)
from exatrkx.models.lightning import (
    EmbeddingModule,
    FilterModule,
    GNNModule,
    pt_factor,
    vertex_z_factor,
)
from exatrkx.paths import shared_trackml_dir

REAL = shared_trackml_dir()


# the backend loads TorchScript: deprecated in torch, still what libtorch runs without Python
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # tiny tensors; spinning threads on a busy machine cost 100x
        yield


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy_events")
    data.write_toy_events(directory, 4, particles_per_event=20, seed=11)
    return directory


@pytest.fixture(scope="module")
def toy_sample(toy_dir):
    return data.event_sample(trackml.read_event(toy_dir, 1))


def test_truth_pairs_follow_particles(toy_sample):
    s = toy_sample
    pid = s["particle_id"]
    a, b = s["truth_pairs"]
    assert len(a) > 0
    assert bool((pid[a] == pid[b]).all()) and bool((pid[a] != 0).all())
    # one pair fewer than spacepoints per particle: consecutive along each particle
    counts = torch.bincount(torch.unique(pid[pid != 0], return_inverse=True)[1])
    assert len(a) == int((counts - 1).sum())
    r = s["x"][:, 0]
    e = s["truth_edges"]
    assert bool((r[e[0]] <= r[e[1]]).all())
    assert s["truth_target"].dtype == torch.bool
    assert bool((s["pt"][e[0]][s["truth_target"]] > 1.0).all())
    # the toy's strip spacepoints (noise aside) have clusters that differ from them
    strips = (s["x"][:, 0] > 0.2) & (pid != 0)
    assert bool((s["x"][strips, 3:6] != s["x"][strips, :3]).any(1).all())


@pytest.mark.skipif(REAL is None, reason="shared/data/trackml not present")
def test_real_event_sample():
    s = data.event_sample(trackml.read_event(REAL, 1))
    assert s["x"].shape == (5527, 9)
    target_particles = torch.unique(s["particle_id"][s["target_hit"]])
    assert 20 < len(target_particles) < 80  # 56 particles above 1 GeV in this subset
    assert s["truth_edges"].shape[1] > 4000


def test_split_events():
    assert data.split_events([5]) == ({"train": [5], "val": [5], "test": [5]}, True)
    splits, smoke = data.split_events(list(range(10, 0, -1)), 0.1, 0.2)
    assert not smoke
    assert splits == {"train": list(range(1, 8)), "val": [8], "test": [9, 10]}
    splits, _ = data.split_events([1, 2], 0.1, 0.1)
    assert splits == {"train": [1], "val": [2], "test": []}
    with pytest.raises(ValueError, match="fractions"):
        data.split_events([1, 2, 3], 0.6, 0.5)
    with pytest.raises(ValueError, match="no events"):
        data.split_events([])


def steps(module, batch, n, lr=3e-3):
    """Plain optimisation steps on one batch, outside a Trainer (no logging)."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        for _ in range(n):
            loss = module.training_step(batch, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.mark.parametrize(
    "options",
    [{}, {"vertex_z_weight": 1.0, "crop_sectors": 2}],
    ids=["plain", "vertex-z-crop"],
)
def test_embedding_loss_goes_down(toy_sample, options):
    torch.manual_seed(0)
    module = EmbeddingModule(
        hidden=32, layers=2, emb_dim=8, margin=0.2, random_pairs=4.0, **options
    )
    n = toy_sample["x"].shape[0]
    g = torch.Generator().manual_seed(1)
    a = torch.cat([toy_sample["truth_edges"][0], torch.randint(0, n, (2000,), generator=g)])
    b = torch.cat([toy_sample["truth_edges"][1], torch.randint(0, n, (2000,), generator=g)])

    def loss():
        with torch.no_grad():
            return float(module.pair_loss(module.net(toy_sample["x"]), toy_sample, a, b))

    before = loss()
    steps(module, toy_sample, 40)
    assert loss() < 0.6 * before
    # the trained embedding brings true pairs closer than random pairs
    with torch.no_grad():
        emb = module.net(toy_sample["x"])
    e = toy_sample["truth_edges"]
    true_d = (emb[e[0]] - emb[e[1]]).norm(dim=1).median()
    rand_d = (emb[a[-2000:]] - emb[b[-2000:]]).norm(dim=1).median()
    assert true_d < 0.5 * rand_d


@pytest.fixture(scope="module")
def toy_graph(toy_sample):
    """Truth edges plus random fakes, as a graph sample."""
    n = toy_sample["x"].shape[0]
    g = torch.Generator().manual_seed(2)
    rand = torch.randint(0, n, (2, 3 * n), generator=g)
    e = toy_sample["truth_edges"]
    graph = dict(toy_sample)
    graph["edge_index"] = canonical_edges(
        torch.cat([e[0], rand[0]]), torch.cat([e[1], rand[1]]), toy_sample["x"][:, 0]
    )
    return graph


@pytest.mark.parametrize(
    "make",
    [
        lambda: FilterModule(hidden=32, layers=2, edges_per_step=500),
        lambda: GNNModule(model="plain", hidden=16, iterations=2),
        lambda: GNNModule(model="hetero", hidden=16, iterations=2),
        lambda: GNNModule(model="hetero", hidden=16, iterations=2, crop_sectors=3),
    ],
    ids=["filter", "gnn-plain", "gnn-hetero", "gnn-hetero-crop"],
)
def test_edge_classifier_loss_goes_down(toy_graph, make):
    torch.manual_seed(0)
    module = make()

    def loss():
        with torch.no_grad():
            return float(module.edge_loss(toy_graph, toy_graph["edge_index"]))

    before = loss()
    steps(module, toy_graph, 80)
    assert loss() < 0.7 * before
    with torch.no_grad():
        scores = torch.sigmoid(module.net(toy_graph["x"], toy_graph["edge_index"]))
    y, _ = edge_labels(toy_graph["edge_index"], toy_graph["particle_id"], toy_graph["target_hit"])
    assert scores[y].mean() > scores[~y].mean() + 0.2


def test_phi_sectors_crop_the_graph(toy_graph):
    x, edge_index = toy_graph["x"], toy_graph["edge_index"]
    phi = x[:, 1]
    # four sectors tiling the circle, the last one across the seam at phi = pi
    starts = [-0.75, -0.25, 0.25, 0.75]
    crops = [phi_sector_edges(x, edge_index, 4, start) for start in starts]
    for start, crop in zip(starts, crops, strict=True):
        assert crop.shape[1] > 0
        offset = torch.remainder(phi[crop.flatten()] - start, 2.0)
        assert bool((offset < 0.5).all())
    # every edge whose ends share a sector is in exactly that sector's crop
    sector = torch.floor(torch.remainder(phi + 0.75, 2.0) / 0.5).long()
    same = sector[edge_index[0]] == sector[edge_index[1]]
    assert sum(c.shape[1] for c in crops) == int(same.sum())
    assert 0 < int(same.sum()) < edge_index.shape[1]
    assert bool(contains(edge_index, torch.cat(crops, dim=1), x.shape[0]).all())
    module = GNNModule(hidden=8, iterations=1, crop_sectors=4)
    seen = []
    module.edge_loss = lambda batch, e: seen.append(e.shape[1]) or torch.zeros(())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(5):
            module.training_step(toy_graph, 0)
    assert max(seen) < edge_index.shape[1]


def test_phi_sector_sample_crops_the_event(toy_sample):
    x, truth = toy_sample["x"], toy_sample["truth_edges"]
    start = -0.25
    crop = phi_sector_sample(toy_sample, 2, start)
    inside = torch.remainder(x[:, 1] - start, 2.0) < 1.0
    assert 0 < int(inside.sum()) < x.shape[0]
    for key in ("x", "particle_id", "target_hit", "vertex_z"):
        assert torch.equal(crop[key], toy_sample[key][inside]), key
    # the truth pairs with both ends inside, renumbered onto the same spacepoints
    both = inside[truth[0]] & inside[truth[1]]
    assert 0 < int(both.sum()) < truth.shape[1]
    assert crop["truth_edges"].shape[1] == int(both.sum())
    assert torch.equal(crop["x"][crop["truth_edges"][0]], x[truth[0, both]])
    assert torch.equal(crop["x"][crop["truth_edges"][1]], x[truth[1, both]])


def test_embedding_pull_weighted_by_vertex_z(toy_sample):
    """The pull of true pairs weighs far-vertex pairs more: with the far pairs the most
    apart the loss rises; with every vertex at z = 0 it is the plain loss."""
    torch.manual_seed(0)
    plain = EmbeddingModule(hidden=16, layers=2, emb_dim=4)
    weighted = EmbeddingModule(hidden=16, layers=2, emb_dim=4, vertex_z_weight=1.0)
    weighted.load_state_dict(plain.state_dict())
    a, b = toy_sample["truth_edges"]
    batch = dict(toy_sample)
    with torch.no_grad():
        emb = plain.net(batch["x"])
        d2 = (emb[a] - emb[b]).pow(2).sum(1)
        batch["vertex_z"] = torch.zeros(batch["x"].shape[0])
        same = float(plain.pair_loss(emb, batch, a, b)), float(weighted.pair_loss(emb, batch, a, b))
        far = a[d2 > d2.median()]
        batch["vertex_z"][far] = 90.0
        heavier = float(weighted.pair_loss(emb, batch, a, b))
    assert same[0] == pytest.approx(same[1])
    assert heavier > same[0] * 1.05


def test_vertex_z_weighting(toy_dir, toy_graph):
    """Samples carry each spacepoint's production-vertex z (0 for noise); the GNN loss can
    weight true edges by it, and without it is the plain weighted BCE."""
    event = trackml.read_event(toy_dir, 1)
    pid = event.truth["particle_id"].to_numpy(np.int64)
    vz = event.particles.set_index("particle_id")["vz"]
    want = np.where(pid != 0, vz.reindex(pid).fillna(0.0).to_numpy(), 0.0)
    assert np.allclose(data.event_sample(event)["vertex_z"].numpy(), want, atol=1e-4)
    batch = dict(toy_graph)
    ends = torch.arange(4)
    batch["vertex_z"] = torch.zeros(batch["x"].shape[0])
    batch["vertex_z"][:4] = torch.tensor([0.0, 50.0, -100.0, 400.0])
    assert vertex_z_factor(batch, ends, 1.0).tolist() == [1.0, 2.0, 5.0, 5.0]
    assert vertex_z_factor(batch, ends, 0.5).tolist() == [1.0, 1.5, 3.0, 3.0]
    plain, weighted, far = weighted_gnn_losses(batch, "vertex_z", 0.0, 80.0, vertex_z_weight=1.0)
    assert plain == pytest.approx(weighted)
    assert far > plain  # true edges count 1 + (80/50)^2 = 3.56 times as much
    del batch["vertex_z"]
    with pytest.raises(ValueError, match="vertex_z"):
        GNNModule(hidden=8, iterations=1, vertex_z_weight=1.0).edge_loss(batch, batch["edge_index"])


def weighted_gnn_losses(batch: dict, column: str, neutral: float, heavy: float, **weighting):
    """The plain GNN loss and the weighted one (same weights) with `column` at `neutral` for
    every spacepoint, and the weighted one with it at `heavy`."""
    edge_index = batch["edge_index"]
    torch.manual_seed(0)
    plain = GNNModule(hidden=8, iterations=1)
    weighted = GNNModule(hidden=8, iterations=1, **weighting)
    weighted.load_state_dict(plain.state_dict())
    losses = []
    with torch.no_grad():
        batch[column] = torch.full((batch["x"].shape[0],), neutral)
        losses.append(float(plain.edge_loss(batch, edge_index)))
        losses.append(float(weighted.edge_loss(batch, edge_index)))
        batch[column] = torch.full((batch["x"].shape[0],), heavy)
        losses.append(float(weighted.edge_loss(batch, edge_index)))
    return tuple(losses)


def test_pt_weighting(toy_graph):
    """The GNN loss can weight true edges by their particle's pT (log2, clamped to 1-16 GeV):
    equal to the plain loss where every pT is at most 1 GeV, heavier for stiff particles."""
    batch = dict(toy_graph)
    ends = torch.arange(5)
    batch["pt"] = torch.zeros(batch["x"].shape[0])
    batch["pt"][:5] = torch.tensor([0.5, 1.0, 2.0, 8.0, 32.0])
    assert pt_factor(batch, ends, 1.0).tolist() == [1.0, 1.0, 2.0, 4.0, 5.0]
    assert pt_factor(batch, ends, 0.5).tolist() == [1.0, 1.0, 1.5, 2.5, 3.0]
    plain, weighted, stiff = weighted_gnn_losses(batch, "pt", 0.8, 4.0, pt_weight=1.0)
    assert plain == pytest.approx(weighted)
    assert stiff > plain  # true edges count 1 + log2(4) = 3 times as much


def test_edge_classifier_takes_an_empty_graph(toy_graph):
    module = GNNModule(hidden=8, iterations=1)
    loss = module.edge_loss(toy_graph, torch.zeros(2, 0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is not None for p in module.parameters())


def test_metrics_scans(toy_graph):
    edge_index = toy_graph["edge_index"]
    y, _ = edge_labels(edge_index, toy_graph["particle_id"], toy_graph["target_hit"])
    perfect = y.float() * 0.9 + 0.05
    rows = metrics.cut_scan([(perfect, toy_graph)], [0.01, 0.5, 0.99])
    assert [r["stage_efficiency"] for r in rows] == [1.0, 1.0, 0.0]
    assert rows[1]["purity"] == 1.0 and rows[0]["purity"] < 1.0
    assert metrics.choose_cut(rows, 0.99)["cut"] == 0.5
    counts = metrics.graph_counts(edge_index, toy_graph)
    assert counts["truth_found"] == counts["truth_total"]  # every truth edge is in the graph


def test_precision_needs_a_device_that_has_it():
    args = train.build_parser().parse_args(
        ["gnn", "--events", ".", "--out", ".", "--precision", "16-mixed"]
    )
    with pytest.raises(ValueError, match="16-mixed needs --accelerator gpu"):
        train.check_precision(args)


def test_stage_without_its_inputs_says_which(tmp_path, toy_dir):
    with pytest.raises(FileNotFoundError, match="embedding"):
        train.main(
            ["filter", "--events", str(toy_dir), "--out", str(tmp_path), "--max-epochs", "1"]
        )
    with pytest.raises(FileNotFoundError, match="no event"):
        train.main(["embedding", "--events", str(tmp_path), "--out", str(tmp_path)])


def test_all_command_end_to_end(tmp_path, toy_dir):
    out = tmp_path / "out"
    small = ["--emb-hidden", "32", "--filter-hidden", "32", "--gnn-hidden", "16"]
    args = ["all", "--events", str(toy_dir), "--out", str(out), "--max-epochs", "2"]
    args += small + ["--gnn-iterations", "2", "--val-fraction", "0.25", "--test-fraction", "0.25"]
    args += ["--cost-spacepoints", "1000", "--cost-edges", "5000", "--cost-gnn-edges", "2000"]
    assert train.main(args) == 0
    names = ("embed.pt", "filter.pt", "gnn.pt", "module_map.csv", "metrics.json", "model_card.md")
    for name in names:
        assert (out / name).is_file(), name
    result = json.loads((out / "metrics.json").read_text())
    folder = str(toy_dir.resolve())
    assert result["embedding"]["events"] == {
        "train": {folder: [1, 2]},
        "val": {folder: [3]},
        "test": {folder: [4]},
    }
    params = result["parameters"]
    assert params["radius"] > 0 and params["knn"] >= 1
    assert 0 <= params["filter_cut"] < 1 and 0 <= params["gnn_cut"] < 1
    assert (out / "parameters.txt").read_text().splitlines() == [
        f"{k}={params[k]}" for k in sorted(params)
    ]
    for stage in ("embedding", "filter", "gnn"):
        assert result[stage]["cost"]["parameters"] > 0
        assert result[stage]["test"]["events"] == 1
    assert result["embedding"]["radius_scan"] and result["gnn"]["cut_scan"]
    assert result["module_map"]["rows"] > 0
    card = (out / "model_card.md").read_text()
    assert "## gnn" in card and f"| `knn` | {params['knn']} |" in card
    # the exported files chain into a pipeline on a test event
    s = data.load_sample(data.sample_path(out / "samples", data.EventRef(folder, 4)))
    embed = torch.jit.load(str(out / "embed.pt"))
    with torch.no_grad():
        graph = radius_graph(embed(s["x"]), params["radius"], params["knn"], s["x"][:, 0])
        kept = graph[
            :,
            torch.sigmoid(torch.jit.load(str(out / "filter.pt"))(s["x"], graph))
            > params["filter_cut"],
        ]
        scores = torch.jit.load(str(out / "gnn.pt"))(s["x"], kept)
    assert scores.shape == (kept.shape[1],)
    assert contains(graph, kept, s["x"].shape[0]).all()


def test_init_weights_start_from_an_exported_network(tmp_path):
    from exatrkx.export import save_scripted, script
    from exatrkx.models.networks import build_gnn

    torch.manual_seed(1)
    trained = build_gnn("hetero", hidden=8, iterations=2)
    path = tmp_path / "gnn.pt"
    save_scripted(script(trained), path)
    torch.manual_seed(2)
    fresh = build_gnn("hetero", hidden=8, iterations=2)
    assert not torch.equal(fresh.output.edge.weight, trained.output.edge.weight)
    train.init_weights(fresh, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(SystemExit, match="shape"):
        train.init_weights(build_gnn("hetero", hidden=16, iterations=2), path)
    with pytest.raises(SystemExit, match="shape"):
        train.init_weights(build_gnn("plain", hidden=8, iterations=2), path)


def test_init_weights_grow_a_gnn_by_iterations_near_the_identity(tmp_path):
    from exatrkx.export import save_scripted, script
    from exatrkx.models.networks import build_gnn

    torch.manual_seed(3)
    trained = build_gnn("hetero", hidden=8, iterations=2).eval()
    path = tmp_path / "gnn.pt"
    save_scripted(script(trained), path)
    x = torch.rand(40, 9)
    x[:, 0] = 0.03 + x[:, 0]  # radii on both sides of the pixel/strip boundary
    edges = torch.randint(0, 40, (2, 120))
    torch.manual_seed(4)
    grown = build_gnn("hetero", hidden=8, iterations=4)
    train.init_weights(grown, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(grown.state_dict()[key], value), key
    grown.eval()
    with torch.no_grad():
        before, after = trained(x, edges), grown(x, edges)
        fresh = build_gnn("hetero", hidden=8, iterations=4).eval()(x, edges)
    assert (after - before).abs().max() < 0.05 < (fresh - before).abs().max()
    # the new iterations learn: their weights get gradients
    grown.train()
    grown(x, edges).sum().backward()
    assert grown.steps[3].node_net[0].weight.grad.abs().sum() > 0
    with pytest.raises(SystemExit, match="shape"):
        train.init_weights(build_gnn("hetero", hidden=8, iterations=1), path)


def write_run_edges(events):
    """`event%09d-edges.npy` beside each event, as `exatrkx run --edges-out` writes them: the
    true pairs and random ones. Returns them by event id."""
    gen = torch.Generator().manual_seed(5)
    written = {}
    for event_id in trackml.list_events(events):
        s = data.event_sample(trackml.read_event(events, event_id))
        n = s["x"].shape[0]
        rand = torch.randint(0, n, (2, 3 * n), generator=gen)
        pairs = torch.cat([s["truth_pairs"], rand], dim=1)
        edges = canonical_edges(pairs[0], pairs[1], s["x"][:, 0])
        np.save(events / f"{trackml.event_prefix(event_id)}-edges.npy", edges.numpy())
        written[event_id] = edges
    return written


RUN_GRAPH_STAGES = {
    # stage: (its options, the graph folder it stores)
    "filter": (["--filter-hidden", "8", "--cost-edges", "2000"], "run-graphs-filter"),
    "gnn": (
        ["--gnn-hidden", "8", "--gnn-iterations", "1", "--cost-gnn-edges", "2000"]
        + ["--gnn-pt-weight", "0.5"],
        "run-graphs",
    ),
}


@pytest.mark.parametrize("stage", sorted(RUN_GRAPH_STAGES))
def test_stage_trains_on_the_graphs_exatrkx_run_wrote(tmp_path, toy_dir, stage):
    options, graph_folder = RUN_GRAPH_STAGES[stage]
    events = tmp_path / "events"
    shutil.copytree(toy_dir, events)
    args = [stage, "--events", str(events), "--out", str(tmp_path / "out"), "--max-epochs", "2"]
    args += ["--graphs-from", "run", "--val-fraction", "0.25", "--test-fraction", "0.25"]
    args += options
    with pytest.raises(FileNotFoundError, match="event000000001-edges.npy is missing"):
        train.main(args)
    written = write_run_edges(events)
    assert train.main(args) == 0
    # the stored graphs are the files, and no embedding or filter stage was asked for
    stored = tmp_path / "out" / "graphs" / graph_folder / data.folder_tag(events)
    for event_id, edges in written.items():
        graph = data.load_sample(stored / f"{trackml.event_prefix(event_id)}.pt")
        assert torch.equal(graph["edge_index"], edges)
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(result) == {stage, "parameters"} and result[stage]["graphs_from"] == "run"
    assert f"{stage}_cut" in result["parameters"]
    if stage == "gnn":
        assert result[stage]["hparams"]["pt_weight"] == 0.5
    assert (tmp_path / "out" / f"{stage}.pt").is_file()
    np.save(events / "event000000002-edges.npy", written[2].numpy().astype(np.int32))
    with pytest.raises(ValueError, match="expected int64"):
        train.main(args)


def test_filter_command_fine_tunes_from_init(tmp_path, toy_dir, capsys):
    from exatrkx.export import save_scripted, script
    from exatrkx.models.networks import FilterNet

    torch.manual_seed(3)
    start = FilterNet(hidden=8, layers=2)
    path = tmp_path / "filter0.pt"
    save_scripted(script(start), path)
    events = tmp_path / "events"
    shutil.copytree(toy_dir, events)
    write_run_edges(events)
    args = [
        "filter",
        "--events",
        str(events),
        "--graphs-from",
        "run",
        "--out",
        str(tmp_path / "out"),
        "--max-epochs",
        "1",
    ]
    args += ["--filter-hidden", "8", "--filter-layers", "2", "--cost-edges", "2000"]
    args += ["--val-fraction", "0.25", "--test-fraction", "0.25", "--init", str(path)]
    assert train.main(args) == 0
    assert f"weights from {path}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(args[:-2] + ["--filter-hidden", "16", "--init", str(path)])


@pytest.mark.parametrize("stage", ["all", "embedding", "module-map"])
def test_one_network_options_refuse_other_commands(tmp_path, toy_dir, stage, capsys):
    base = [stage, "--events", str(toy_dir), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        train.main(base + ["--graphs-from", "run"])
    assert "goes with the filter or gnn command" in capsys.readouterr().err
    if stage != "embedding":
        with pytest.raises(SystemExit):
            train.main(base + ["--init", str(tmp_path / "x.pt")])
        assert "goes with the embedding, filter or gnn command" in capsys.readouterr().err


def test_embedding_command_starts_from_init(tmp_path, toy_dir):
    from exatrkx.export import save_scripted, script
    from exatrkx.models.networks import EmbeddingNet

    path = tmp_path / "embed0.pt"
    save_scripted(script(EmbeddingNet(9, 16, 2, 4)), path)
    base = ["embedding", "--events", str(toy_dir), "--out", str(tmp_path / "out"), "--init"]
    # the weights are read before any event: a network of another shape stops the command
    with pytest.raises(SystemExit, match="shape"):
        train.main(base + [str(path), "--emb-hidden", "32"])


def test_max_time_reaches_the_trainer(tmp_path):
    from lightning.pytorch.callbacks import Timer

    args = train.build_parser().parse_args(
        [
            "gnn",
            "--events",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--max-time",
            "00:00:02:30",
        ]
    )
    trainer = train.make_trainer(args, "gnn", train.Layout(args.out))
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert len(timers) == 1 and timers[0].time_remaining() == 150


def test_samples_prepared_in_processes_equal_the_sequential_ones(tmp_path, toy_dir):
    refs = [data.EventRef(str(toy_dir.resolve()), i) for i in trackml.list_events(toy_dir)]
    truth = data.TruthConfig()
    data.prepare_samples(refs, tmp_path / "one", truth)
    data.prepare_samples(refs, tmp_path / "many", truth, workers=3)
    for ref in refs:
        one = data.load_sample(data.sample_path(tmp_path / "one", ref))
        many = data.load_sample(data.sample_path(tmp_path / "many", ref))
        assert one.keys() == many.keys()
        for key, value in one.items():
            assert torch.equal(value, many[key]) if torch.is_tensor(value) else value == many[key]
