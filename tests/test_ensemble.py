"""The Python peer (`exatrkx_ensemble`: Python-backend steps, bench/ensemble/) loads next to
the exatrkx model in one real tritonserver and gives the same labels, so that the
benchmark compares equal work."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from exatrkx import bench_repository, testing

SPACEPOINTS = 1500


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("ensemble")
    source = testing.make_model_repository(tmp / "source")
    repo = bench_repository.write_bench_repository(source, tmp / "bench")
    backends = bench_repository.prepare_backend_directory(
        tmp / "backends", backend_directory / "exatrkx"
    )
    with bench_repository.running_bench_server(
        repo, backends, log_path=tmp / "tritonserver.log", startup_timeout=180
    ) as server:
        yield server


def infer(server, model: str, features: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("FEATURES", list(features.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("LABELS")])
    return result.as_numpy("LABELS")


def test_both_models_ready_with_the_same_contract(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for model in (bench_repository.MODEL, bench_repository.ENSEMBLE):
        assert client.is_model_ready(model)
        meta = client.get_model_metadata(model)
        assert [(t.name, t.datatype) for t in meta.outputs] == [("LABELS", "INT64")]
        assert ("FEATURES", "FP32") in [(t.name, t.datatype) for t in meta.inputs]
    steps = bench_repository.STEPS["radius"]
    assert all(client.is_model_ready(step) for step in steps)


def test_ensemble_labels_equal_the_backend(server, features):
    x = features[:SPACEPOINTS]
    ours = infer(server, bench_repository.MODEL, x)
    peer = infer(server, bench_repository.ENSEMBLE, x)
    assert ours.shape == peer.shape == (SPACEPOINTS,)
    # A meaningful comparison: several tracks and unassigned spacepoints.
    assert ours.max() >= 2 and (ours == -1).any()
    np.testing.assert_array_equal(peer, ours)
    # Every step ran once for that request (and the statistics say so).
    for step in bench_repository.STEPS["radius"]:
        stats = server.model_statistics(step)["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] >= 1, step


def test_ensemble_step_error_names_the_stage(server):
    bad = np.zeros((10, 3), dtype=np.float32)  # the networks take 9 feature columns
    with pytest.raises(grpcclient.InferenceServerException, match="embedding: "):
        infer(server, bench_repository.ENSEMBLE, bad)
    # The server keeps serving.
    x = np.ascontiguousarray(testing.synthetic_features(300, seed=3))
    np.testing.assert_array_equal(
        infer(server, bench_repository.ENSEMBLE, x), infer(server, bench_repository.MODEL, x)
    )
