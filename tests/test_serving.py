"""The exatrkx model served by a real tritonserver: contract, HTTP and gRPC against the
in-process pipeline, optional outputs, bad inputs, statistics."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import InProcess, http_json, start_server
from exatrkx import paths, trackml
from exatrkx_client import ExaTrkXClient

MAX_SPACEPOINTS = 20_000


def design_parameter_keys() -> list[str]:
    """The keys of the parameter table in docs/DESIGN.md, the contract the config follows."""
    text = (paths.REPO_ROOT / "docs" / "DESIGN.md").read_text()
    section = text.split("## Pipeline parameters", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.M)


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("serving")
    server = start_server(
        tmp, backend_directory, parameters={"max_spacepoints": str(MAX_SPACEPOINTS)}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def in_process(server, tmp_path_factory):
    return InProcess(server, "exatrkx", tmp_path_factory.mktemp("in_process"))


@pytest.fixture(scope="module")
def grpc(server):
    with ExaTrkXClient(server.grpc_url, protocol="grpc") as client:
        yield client


@pytest.fixture(scope="module")
def http(server):
    with ExaTrkXClient(server.http_url, protocol="http") as client:
        yield client


@pytest.fixture(scope="module")
def small(features):
    """A few hundred spacepoints of a phi wedge (whole tracks, so some edges and tracks):
    quick requests between the error cases."""
    phi = features[:, 1] * np.pi
    return np.ascontiguousarray(features[(phi >= 0.0) & (phi < 0.4)])


def test_metadata_and_config_follow_the_contract(server):
    status, meta = http_json(server, "/v2/models/exatrkx")
    assert status == 200
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    outputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
    assert inputs == {"FEATURES": ("FP32", [-1, -1]), "MODULE_ID": ("INT64", [-1])}
    assert outputs == {
        "LABELS": ("INT64", [-1]),
        "EDGE_INDEX": ("INT64", [2, -1]),
        "EDGE_SCORES": ("FP32", [-1]),
        "TRACKS": ("FP32", [-1, 8]),
    }
    status, config = http_json(server, "/v2/models/exatrkx/config")
    assert status == 200
    assert config["backend"] == "exatrkx"
    assert config["max_batch_size"] == 0
    optional = {t["name"]: t.get("optional", False) for t in config["input"]}
    assert optional == {"FEATURES": False, "MODULE_ID": True}
    assert [g["kind"] for g in config["instance_group"]] == ["KIND_CPU"]
    keys = design_parameter_keys()
    assert len(keys) == 27 and {"gpu_filter_chunk", "walk_chain_cut", "gnn_refine_cut"} <= set(keys)
    assert sorted(config["parameters"]) == sorted(keys)
    assert config["parameters"]["max_spacepoints"]["string_value"] == str(MAX_SPACEPOINTS)


def test_http_and_grpc_give_the_in_process_labels(features, grpc, http, in_process):
    expected = in_process.run(features)["LABELS"]
    by_grpc = grpc.infer(features)["LABELS"]
    by_http = http.infer(features)["LABELS"]
    assert by_grpc.dtype == np.int64 and by_grpc.shape == (len(features),)
    np.testing.assert_array_equal(by_grpc, expected)
    np.testing.assert_array_equal(by_http, expected)
    # A result worth comparing: some tracks, some spacepoints left out, labels 0..T-1.
    tracks = np.unique(by_grpc[by_grpc >= 0])
    assert len(tracks) > 10
    assert (by_grpc == -1).any()
    np.testing.assert_array_equal(tracks, np.arange(len(tracks)))


def test_optional_outputs_only_when_requested(small, grpc, in_process):
    expected = in_process.run(small)
    labels_only = grpc.infer(small)
    assert list(labels_only) == ["LABELS"]
    result = grpc.infer(small, outputs=["LABELS", "EDGE_INDEX", "EDGE_SCORES", "TRACKS"])
    np.testing.assert_array_equal(result["LABELS"], expected["LABELS"])
    np.testing.assert_array_equal(result["EDGE_INDEX"], expected["EDGE_INDEX"])
    np.testing.assert_array_equal(result["EDGE_SCORES"], expected["EDGE_SCORES"])
    edges = result["EDGE_INDEX"]
    assert edges.shape[0] == 2 and edges.shape[1] == len(result["EDGE_SCORES"]) > 0
    # Edge convention: sorted by (src, dst), no self-loops.
    assert (edges[0] != edges[1]).all()
    order = np.lexsort((edges[1], edges[0]))
    np.testing.assert_array_equal(order, np.arange(edges.shape[1]))
    assert result["TRACKS"].dtype == np.float32 and result["TRACKS"].shape[1:] == (8,)


def test_module_ids_are_accepted(event, features, grpc, in_process):
    modules = trackml.module_ids(event)[:400]
    expected = in_process.run(features[:400], module_ids=modules)["LABELS"]
    got = grpc.infer(features[:400], module_ids=modules)["LABELS"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_events_give_empty_or_unlabelled_results(n, small, grpc, http):
    for client in (grpc, http):
        labels = client.infer(small[:n])["LABELS"]
        assert labels.shape == (n,)
        assert (labels == -1).all()


def _infer_raw(url, name, array, datatype, outputs=("LABELS",)):
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return client.infer(
        "exatrkx", [inp], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs]
    )


def _bad_cases(small):
    nan = small.copy()
    nan[7, 4] = np.nan
    inf = small.copy()
    inf[3, 0] = np.inf
    return {
        "wrong dtype": (
            lambda url: _infer_raw(url, "FEATURES", small.astype(np.float64), "FP64"),
            ["FEATURES", "FP64"],
        ),
        "wrong rank": (
            lambda url: _infer_raw(url, "FEATURES", small.reshape(-1), "FP32"),
            ["FEATURES"],
        ),
        "wrong feature count": (
            lambda url: _infer_raw(url, "FEATURES", np.ascontiguousarray(small[:, :3]), "FP32"),
            ["FEATURES", "3", "9"],
        ),
        "NaN": (lambda url: _infer_raw(url, "FEATURES", nan, "FP32"), ["FEATURES[7, 4]", "NaN"]),
        "inf": (lambda url: _infer_raw(url, "FEATURES", inf, "FP32"), ["FEATURES[3, 0]", "inf"]),
        "too many spacepoints": (
            lambda url: _infer_raw(
                url, "FEATURES", np.zeros((MAX_SPACEPOINTS + 1, 9), np.float32), "FP32"
            ),
            ["FEATURES", str(MAX_SPACEPOINTS + 1), "max_spacepoints"],
        ),
        "unknown output": (
            lambda url: _infer_raw(url, "FEATURES", small, "FP32", outputs=("LABELS", "SCORES")),
            ["SCORES"],
        ),
        "missing FEATURES": (
            lambda url: _infer_raw(url, "MODULE_ID", np.zeros(4, np.int64), "INT64"),
            ["FEATURES"],
        ),
        "MODULE_ID length": (
            lambda url: ExaTrkXClient(url).infer(small, module_ids=np.zeros(3, np.int64)),
            ["MODULE_ID", "3", str(len(small))],
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong dtype",
        "wrong rank",
        "wrong feature count",
        "NaN",
        "inf",
        "too many spacepoints",
        "unknown output",
        "missing FEATURES",
        "MODULE_ID length",
    ],
)
def test_bad_input_fails_that_request_only(case, server, small, grpc, in_process):
    call, words = _bad_cases(small)[case]
    with pytest.raises(InferenceServerException) as raised:
        call(server.grpc_url)
    message = str(raised.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    # The server keeps serving: a good request right after gets the right answer.
    np.testing.assert_array_equal(grpc.infer(small)["LABELS"], in_process.run(small)["LABELS"])


def test_byte_size_mismatch_is_refused_over_http(server, small, grpc):
    # Declared shape [400, 9] with binary data for 10 rows only.
    data = np.ascontiguousarray(small[:10]).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "FEATURES",
                    "shape": list(small.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "outputs": [{"name": "LABELS"}],
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/exatrkx/infer",
        data=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    message = raised.value.read().decode()
    assert raised.value.code == 400
    assert "FEATURES" in message, message
    assert grpc.infer(small)["LABELS"].shape == (len(small),)


def test_statistics_and_metrics_count_requests(server, small, grpc, http):
    before = server.model_statistics()["model_stats"][0]
    for client in (grpc, http, grpc):
        client.infer(small)
    stats = server.model_statistics()["model_stats"][0]
    assert stats["inference_count"] - before["inference_count"] == 3
    assert stats["execution_count"] - before["execution_count"] == 3
    infer = stats["inference_stats"]
    assert infer["success"]["count"] >= 3
    for part in ("compute_input", "compute_infer", "compute_output", "queue"):
        assert infer[part]["count"] >= 3, part
    assert infer["compute_infer"]["ns"] > 0
    # Compute dominates the request: the pipeline runs between compute start and end.
    assert infer["compute_infer"]["ns"] > infer["compute_input"]["ns"]
    batch = {b["batch_size"]: b for b in stats["batch_stats"]}
    assert batch[1]["compute_infer"]["count"] >= 3
    metrics = server.metrics()

    def metric(name):
        match = re.search(rf'^{name}{{model="exatrkx",version="1"}} (\S+)$', metrics, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))

    assert metric("nv_inference_request_success") >= 3
    assert metric("nv_inference_count") >= 3
    assert metric("nv_inference_compute_infer_duration_us") > 0


def test_failed_requests_are_counted_as_failures(server, small):
    before = server.model_statistics()["model_stats"][0]["inference_stats"]["fail"]["count"]
    bad = np.ascontiguousarray(small[:, :5])
    with pytest.raises(InferenceServerException):
        _infer_raw(server.grpc_url, "FEATURES", bad, "FP32")
    after = server.model_statistics()["model_stats"][0]["inference_stats"]["fail"]["count"]
    assert after == before + 1


def test_backend_logs_through_the_server_log(server):
    log = server.log_text()
    assert re.search(r"backend 'exatrkx': Triton backend API 1\.\d+", log)
    assert "TorchScript graph executor optimisation off" in log
    assert "model instance 'exatrkx_0_0': pipeline on Cpu, 9 features" in log
    assert "execute with 1 request(s)" in log  # verbose level, --log-verbose=1


def test_http_client_library_call(server, small):
    # tritonclient.http directly, requesting outputs by name with binary data.
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("FEATURES", list(small.shape), "FP32")
    inp.set_data_from_numpy(small, binary_data=False)
    result = client.infer(
        "exatrkx", [inp], outputs=[httpclient.InferRequestedOutput("LABELS", binary_data=True)]
    )
    assert result.as_numpy("LABELS").shape == (len(small),)
    assert result.get_output("EDGE_INDEX") is None
