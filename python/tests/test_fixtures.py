"""The fixture generator: model interfaces of docs/DESIGN.md and synthetic events."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exatrkx import fixtures, reference

# TorchScript is the model contract (docs/DESIGN.md), deprecated in Python but what libtorch loads.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def test_models_follow_the_interfaces(tmp_path):
    params = fixtures.make_model_folder(tmp_path / "exatrkx", size="tiny", seed=3)
    folder = tmp_path / "exatrkx"
    assert reference.load_parameters(folder).radius == float(np.float32(params["radius"]))
    event = fixtures.synthetic_event(500, seed=1, geometry="tiny")
    x = torch.from_numpy(event["features"])
    models = {n: torch.jit.load(str(folder / "1" / n)) for n in fixtures.SIZES_FILES}
    with torch.no_grad():
        emb = models["embed.pt"](x)
        assert emb.shape == (len(x), models["embed.pt"].embedding_dim())
        edge_index = torch.tensor([[0, 1, 2], [3, 4, 5]])
        for name in ("filter.pt", "gnn.pt"):
            assert models[name].num_features() == 9
            assert models[name](x, edge_index).shape == (3,)
    table = reference.read_module_map(folder / "1" / "module_map.csv")
    assert len(table) > 50 and (table["dphi_min"] <= table["dphi_max"]).all()


def test_synthetic_events_hold_tracks_and_noise():
    event = fixtures.synthetic_event(3000, seed=2)
    features, pid = event["features"], event["particle_ids"]
    assert features.shape[1] == 9 and features.dtype == np.float32
    assert 2500 < len(features) < 3500
    assert np.array_equal(features[:, 3:6], features[:, :3])
    assert 0.05 < np.mean(pid == 0) < 0.15
    # a particle's spacepoints lie on distinct layers
    track = features[pid == pid[pid > 0][0]]
    assert len(np.unique(track[:, 0])) == len(track) >= 3
