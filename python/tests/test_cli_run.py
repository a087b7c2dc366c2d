"""`exatrkx run` (the in-process Rust pipeline on TrackML events) against the Python reference."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import rust_tools
import torch

from exatrkx import data, module_map, reference, trackml
from exatrkx.paths import REPO_ROOT

MODEL = REPO_ROOT / "pipeline" / "tests" / "fixtures" / "exatrkx"
needs_rust = pytest.mark.skipif(
    not rust_tools.EXATRKX.exists(),
    reason="target/release/exatrkx not built (cargo build --release)",
)


@needs_rust
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"graph_construction": "module_map", "track_builder": "walkthrough"},
        {"gnn_refine_cut": "0.3", "gnn_refine_model": "gnn.pt", "track_builder": "walkthrough"},
    ],
)
def test_run_writes_the_reference_labels(tmp_path, params):
    events = rust_tools.simulate(tmp_path / "events", mu=3, events=2, seed=41)
    # the fixture networks with a module map of these events' own truth, so that both graph
    # constructions find tracks
    folder = tmp_path / "exatrkx"
    shutil.copytree(MODEL, folder)
    samples = [
        data.event_sample(trackml.read_event(events, i)) for i in trackml.list_events(events)
    ]
    module_map.save_module_map(
        module_map.build_module_map(samples), folder / "1" / "module_map.csv"
    )
    out = tmp_path / "labels"
    args = [rust_tools.EXATRKX, "run", "--events", events, "--out", out, "--model", folder]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    stdout = rust_tools.run(*args)
    assert "2 events" in stdout and "efficiency" in stdout and "fake rate" in stdout

    pipeline = reference.ReferencePipeline(folder / "1", reference.load_parameters(folder, params))
    for event_id in trackml.list_events(events):
        event = trackml.read_event(events, event_id)
        written = trackml.read_labels(out, event_id)
        assert written["hit_id"].tolist() == event.hits["hit_id"].tolist()
        expected = pipeline.run(trackml.features(event), trackml.module_ids(event)).labels
        assert np.array_equal(written["track_id"].to_numpy(), expected)
        assert written["track_id"].max() >= 0, "the fixture models find some tracks"


@needs_rust
def test_run_names_a_bad_parameter(tmp_path):
    events = rust_tools.simulate(tmp_path / "events", mu=1, events=1, seed=3)
    with pytest.raises(RuntimeError, match="radius"):
        rust_tools.run(
            rust_tools.EXATRKX,
            "run",
            "--events",
            events,
            "--out",
            tmp_path / "o",
            "--model",
            MODEL,
            "--param",
            "radius=-1",
        )
    # a scan of track_cut without a track-quality network would score nothing new
    with pytest.raises(RuntimeError, match="track_model"):
        rust_tools.run(
            rust_tools.EXATRKX, "tune", "--events", events, "--model", MODEL,
            "--grid", "track_cut=0.3,0.6",
        )  # fmt: skip


@needs_rust
def test_run_writes_the_final_graph(tmp_path):
    events = rust_tools.simulate(tmp_path / "events", mu=3, events=1, seed=43)
    event = trackml.read_event(events, 0)
    x = trackml.features(event)
    written = {}
    for gnn_cut in (0.0, 0.5):
        out = tmp_path / f"graph-{gnn_cut}"
        param = f"gnn_cut={gnn_cut}"
        rust_tools.run(
            rust_tools.EXATRKX,
            *("run", "--events", events, "--out", tmp_path / "labels", "--model", MODEL),
            *("--param", param, "--edges-out", out),
        )
        edges = np.load(out / "event000000000-edges.npy")
        scores = np.load(out / "event000000000-scores.npy")
        assert edges.dtype == np.int64 and scores.dtype == np.float32
        assert edges.shape == (2, len(scores))
        params = reference.load_parameters(MODEL, {"gnn_cut": str(gnn_cut)})
        expected = reference.ReferencePipeline(MODEL / "1", params).run(x)
        assert np.array_equal(edges, expected.edge_index)
        np.testing.assert_allclose(scores, expected.edge_scores, atol=1e-5)
        written[gnn_cut] = edges, scores
    # with no GNN cut the file holds the GNN's whole input, a superset of the cut graph
    (all_edges, all_scores), (kept, _) = written[0.0], written[0.5]
    assert kept.shape[1] < all_edges.shape[1]
    assert np.array_equal(all_edges[:, all_scores > 0.5], kept)


@needs_rust
def test_the_refining_gnn_pass_scores_the_thinned_graph_as_the_reference(tmp_path):
    events = rust_tools.simulate(tmp_path / "events", mu=3, events=1, seed=44)
    x = trackml.features(trackml.read_event(events, 0))

    def written(name: str, **params: str) -> tuple[np.ndarray, np.ndarray]:
        args = ["run", "--events", events, "--out", tmp_path / "labels", "--model", MODEL]
        for key, value in params.items():
            args += ["--param", f"{key}={value}"]
        rust_tools.run(rust_tools.EXATRKX, *args, "--edges-out", tmp_path / name)
        prefix = tmp_path / name / "event000000000"
        return np.load(f"{prefix}-edges.npy"), np.load(f"{prefix}-scores.npy")

    all_edges, first_scores = written("one", gnn_cut="0")
    cut = repr(float(np.median(first_scores)))  # whatever the fixture network scores
    edges, scores = written("two", gnn_cut="0", gnn_refine_cut=cut)
    thinned = first_scores > np.float32(cut)
    assert 0 < thinned.sum() < len(first_scores)
    assert np.array_equal(edges, all_edges[:, thinned])
    assert not np.allclose(scores, first_scores[thinned], atol=1e-3)
    params = reference.load_parameters(MODEL, {"gnn_cut": "0", "gnn_refine_cut": cut})
    expected = reference.ReferencePipeline(MODEL / "1", params).run(x)
    assert np.array_equal(edges, expected.edge_index)
    np.testing.assert_allclose(scores, expected.edge_scores, atol=1e-5)
    assert expected.graph_sizes == [expected.graph_sizes[0], len(first_scores), len(scores)]

    # a second refining pass on what the first keeps above its median, with its own network
    # (the filter's: it reads the same inputs)
    second_cut = repr(float(np.median(scores)))
    both = {"gnn_cut": "0", "gnn_refine_cut": f"{cut},{second_cut}"}
    both["gnn_refine_model"] = "gnn.pt, filter.pt"
    edges2, scores2 = written("three", **both)
    assert np.array_equal(edges2, edges[:, scores > np.float32(second_cut)])
    assert not np.allclose(scores2, scores[scores > np.float32(second_cut)], atol=1e-3)
    params = reference.load_parameters(MODEL, both)
    expected = reference.ReferencePipeline(MODEL / "1", params).run(x)
    assert np.array_equal(edges2, expected.edge_index)
    np.testing.assert_allclose(scores2, expected.edge_scores, atol=1e-5)
    assert set(expected.timings) >= {"gnn", "gnn_refine", "gnn_refine2"}


@needs_rust
def test_run_on_a_gpu_or_says_why_not(tmp_path):
    import torch

    events = rust_tools.simulate(tmp_path / "events", mu=1, events=1, seed=4)
    common = ("run", "--events", events, "--model", MODEL)
    with pytest.raises(RuntimeError, match="expected cpu, cuda or cuda:N"):
        rust_tools.run(rust_tools.EXATRKX, *common, "--out", tmp_path / "x", "--device", "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA device 0 requested but only 0 GPU"):
            rust_tools.run(rust_tools.EXATRKX, *common, "--out", tmp_path / "g", "--device", "cuda")
        return
    rust_tools.run(rust_tools.EXATRKX, *common, "--out", tmp_path / "g", "--device", "cuda")
    rust_tools.run(rust_tools.EXATRKX, *common, "--out", tmp_path / "c")
    name = f"{trackml.event_prefix(0)}-labels.csv"
    assert (tmp_path / "g" / name).read_text() == (tmp_path / "c" / name).read_text()


@needs_rust
def test_run_with_second_pass_and_track_quality_writes_the_reference_labels(tmp_path):
    """The walkthrough's second pass, the mutual-best chains and the track-quality network
    (the fixture's untrained one, its cut at the median score so that it drops half the
    candidates): the Rust rows, scores and selection give the reference labels."""
    from exatrkx import track_quality

    events = rust_tools.simulate(tmp_path / "events", mu=3, events=2, seed=43)
    params = {"track_builder": "walkthrough", "walk_rescue_cut": "0.3", "walk_chain_cut": "0.05"}
    base = reference.load_parameters(MODEL, params)
    no_chains = reference.load_parameters(MODEL, {**params, "walk_chain_cut": "none"})
    chain_tracks = 0
    plain = reference.ReferencePipeline(MODEL / "1", base)
    net = torch.jit.load(str(MODEL / "1" / "tracks.pt"))
    scores, before = [], {}
    for event_id in trackml.list_events(events):
        event = trackml.read_event(events, event_id)
        x = trackml.features(event)
        result = plain.run(x, trackml.module_ids(event))
        labels, second = reference.walkthrough_passes(
            len(x), result.edge_index, result.edge_scores, base
        )
        assert np.array_equal(labels, result.labels)
        walks, _ = reference.walkthrough_passes(
            len(x), result.edge_index, result.edge_scores, no_chains
        )
        chain_tracks += labels.max() - walks.max()
        rows = track_quality.track_features(
            x, labels, second, result.edge_index, result.edge_scores
        )
        with torch.no_grad():
            scores += torch.sigmoid(net(torch.from_numpy(rows))).tolist()
        before[event_id] = labels
    assert len(scores) >= 4 and chain_tracks > 0
    params.update(track_model="tracks.pt", track_cut=repr(float(np.median(scores))))

    out = tmp_path / "labels"
    args = [rust_tools.EXATRKX, "run", "--events", events, "--out", out, "--model", MODEL]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    rust_tools.run(*args)
    pipeline = reference.ReferencePipeline(MODEL / "1", reference.load_parameters(MODEL, params))
    dropped = 0
    for event_id in trackml.list_events(events):
        event = trackml.read_event(events, event_id)
        written = trackml.read_labels(out, event_id)["track_id"].to_numpy()
        expected = pipeline.run(trackml.features(event), trackml.module_ids(event)).labels
        assert np.array_equal(written, expected)
        dropped += before[event_id].max() - written.max()
    assert dropped > 0 and max(trackml.read_labels(out, i)["track_id"].max() for i in before) >= 0


@needs_rust
def test_the_fused_cpu_kernels_run_their_networks_and_step_aside_for_others(tmp_path):
    """`cpu_kernels` auto (the fused filter and GNN where they reproduce the files) and torch
    give the same labels; networks whose activation the kernels do not compute are caught by
    their probes and run through libtorch."""
    import re
    import subprocess

    from exatrkx import export
    from exatrkx.models.networks import FilterNet, HeteroInteractionGNN

    flags = next(
        (
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ),
        [],
    )
    # the kernels run only on CPUs with AVX2 and FMA: libtorch everywhere else
    relu = "true" if {"avx2", "fma"} <= set(flags) else "false"
    events = rust_tools.simulate(tmp_path / "events", mu=3, events=1, seed=43)
    for activation, fused in (("relu", relu), ("tanh", "false")):
        folder = tmp_path / activation
        shutil.copytree(MODEL, folder)
        torch.manual_seed(7)
        nets = {
            "filter": FilterNet(hidden=32, layers=2, activation=activation),
            "gnn": HeteroInteractionGNN(hidden=32, iterations=2, activation=activation),
        }
        for name, net in nets.items():
            export.save_scripted(export.script(net.eval()), folder / "1" / f"{name}.pt")
        labels = {}
        for kernel in ("auto", "torch"):
            out = tmp_path / f"labels-{activation}-{kernel}"
            args = ["run", "--events", events, "--out", out, "--model", folder, "--log", "info"]
            args += ["--param", f"cpu_kernels={kernel}", "--param", "filter_cut=0.3"]
            done = subprocess.run(
                [str(a) for a in [rust_tools.EXATRKX, *args]],
                capture_output=True,
                text=True,
                check=True,
            )
            log = re.sub(r"\x1b\[[0-9;]*m", "", done.stderr + done.stdout)
            for name in nets:
                want = fused if kernel == "auto" else "false"
                assert f'stage="{name}" fused={want}' in log, log
            labels[kernel] = trackml.read_labels(out, 0)["track_id"].to_numpy()
        assert np.array_equal(labels["auto"], labels["torch"])
        assert labels["auto"].max() >= 0
