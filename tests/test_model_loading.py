"""Loading and unloading models through the repository API (explicit model control): the
backend refuses bad configurations with messages that name the setting, and the server keeps
serving the models that are fine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import http_json
from exatrkx import testing
from exatrkx.server import TritonServer
from exatrkx_client import ExaTrkXClient


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("loading")
    repo = tmp / "repo"
    testing.make_model_repository(repo)
    server = TritonServer(
        repo,
        backend_directory=backend_directory,
        model_control_mode="explicit",
        log_path=tmp / "tritonserver.log",
    ).start()
    yield server
    server.stop()


def load(server, name):
    return http_json(server, f"/v2/repository/models/{name}/load", body=b"")


def add_model(server, name, **options):
    testing.make_model_repository(server.model_repository, model_name=name, **options)


def test_bad_parameter_is_named_and_other_models_keep_serving(server, features):
    add_model(server, "bad_knn", parameters={"knn": "many"})
    status, body = load(server, "bad_knn")
    assert status == 400
    assert "'knn'" in body["error"] and "many" in body["error"], body
    add_model(server, "bad_key", parameters={"colour": "red"})
    status, body = load(server, "bad_key")
    assert status == 400 and "unknown parameter 'colour'" in body["error"], body
    with ExaTrkXClient(server.grpc_url) as client:
        assert client.infer(features[:50])["LABELS"].shape == (50,)


def test_missing_model_file_is_named(server):
    add_model(server, "no_gnn")
    (server.model_repository / "no_gnn" / "1" / "gnn.pt").unlink()
    status, body = load(server, "no_gnn")
    assert status == 400
    assert "gnn.pt" in body["error"] and "no such file" in body["error"], body


def test_track_model_of_the_wrong_kind_is_named(server, features):
    """A track model that is not a track-quality network (here the filter) is refused at load,
    naming what it lacks; switching the stage off serves without the file."""
    add_model(server, "tracks_filter", parameters={"track_model": "filter.pt"})
    status, body = load(server, "tracks_filter")
    assert status == 400 and "num_track_features" in body["error"], body
    add_model(server, "no_tracks", parameters={"track_model": "none"})
    (server.model_repository / "no_tracks" / "1" / "tracks.pt").unlink()
    status, body = load(server, "no_tracks")
    assert status == 200, body


def test_contract_violation_is_named(server):
    add_model(server, "batched")
    config = server.model_repository / "batched" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 0", "max_batch_size: 4"))
    status, body = load(server, "batched")
    assert status == 400 and "max_batch_size must be 0" in body["error"], body


def test_model_directory_placeholder_in_parameters(server, features):
    add_model(
        server,
        "placeholder",
        parameters={
            "gnn_model": "$$TRITON_MODEL_DIRECTORY/1/gnn_v2.pt",
            "filter_model": "$$TRITON_MODEL_DIRECTORY/1/filter.pt",
        },
    )
    version = server.model_repository / "placeholder" / "1"
    (version / "gnn.pt").rename(version / "gnn_v2.pt")
    status, body = load(server, "placeholder")
    assert status == 200, body
    with (
        ExaTrkXClient(server.grpc_url, model="placeholder") as a,
        ExaTrkXClient(server.grpc_url) as b,
    ):
        # Same seeded models as `exatrkx`, only renamed: same labels.
        x = features[:500]
        np.testing.assert_array_equal(a.infer(x)["LABELS"], b.infer(x)["LABELS"])


def test_gpu_instance(server, features):
    add_model(server, "on_gpu", instance_kind="KIND_GPU")
    status, body = load(server, "on_gpu")
    if torch.cuda.is_available():
        assert status == 200, body
        with ExaTrkXClient(server.grpc_url, model="on_gpu") as client:
            assert client.infer(features[:500])["LABELS"].shape == (500,)
    else:
        # Triton itself refuses KIND_GPU where it sees no GPU, before the backend is asked;
        # the backend's own check (libtorch without CUDA) is unit-tested in instance.rs.
        assert status == 400
        assert "KIND_GPU" in body["error"], body


def test_unload_and_reload_finalizes_cleanly(server, features):
    status, _ = http_json(server, "/v2/repository/models/exatrkx/unload", body=b"")
    assert status == 200
    assert not server.is_model_ready("exatrkx") or _wait_unready(server)
    status, body = load(server, "exatrkx")
    assert status == 200, body
    with ExaTrkXClient(server.grpc_url) as client:
        assert client.infer(features[:100])["LABELS"].shape == (100,)
    assert server.is_running()


def _wait_unready(server, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_model_ready("exatrkx"):
            return True
        time.sleep(0.1)
    return False
