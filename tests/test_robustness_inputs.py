"""Bad requests through a real tritonserver, beyond those of test_serving.py: wrong types and
shapes of both inputs, features in the wrong units, the spacepoint limit at its edge,
malformed HTTP bodies, and good and bad requests at once. Each bad request fails alone with a
message naming the input and the problem; the good request right after is answered right."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import InProcess, start_server
from exatrkx import testing

MAX_SPACEPOINTS = 3000


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("robust_inputs")
    server = start_server(
        tmp,
        backend_directory,
        instance_count=2,
        parameters={"max_spacepoints": str(MAX_SPACEPOINTS)},
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def event():
    """A small synthetic event (straight tracks), some tracks in its answer."""
    return testing.synthetic_features(400, seed=11)


@pytest.fixture(scope="module")
def reference(server, event, tmp_path_factory):
    return InProcess(server, "exatrkx", tmp_path_factory.mktemp("ref")).run(event)["LABELS"]


@pytest.fixture(scope="module")
def client(server):
    return grpcclient.InferenceServerClient(server.grpc_url)


def infer(client, inputs, outputs=("LABELS",), request_id=""):
    """`inputs`: (name, array, datatype) triples."""
    tensors = []
    for name, array, datatype in inputs:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(
        "exatrkx",
        tensors,
        outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
        request_id=request_id,
    )


def assert_serves(client, event, reference):
    labels = infer(client, [("FEATURES", event, "FP32")]).as_numpy("LABELS")
    np.testing.assert_array_equal(labels, reference)


def with_column(x, columns, scale=1.0, value=None, row=0, col=None):
    """A copy of `x` with `columns` scaled, and one value set at (row, col)."""
    y = x.copy()
    y[:, columns] *= scale
    if value is not None:
        y[row, columns[0] if col is None else col] = value
    return y


def bad_requests(x: np.ndarray) -> dict:
    """name -> (inputs, words the error message must hold)."""
    n = len(x)
    ids = np.arange(n, dtype=np.int64)
    f = ("FEATURES", x, "FP32")
    cartesian = x.copy()
    r, phi = x[:, 0], x[:, 1] * np.pi
    cartesian[:, 0], cartesian[:, 1] = r * np.cos(phi), r * np.sin(phi)
    cartesian[0, 0] = -0.25  # x < 0 somewhere in any event
    too_many = np.tile(x, (MAX_SPACEPOINTS // n + 1, 1))[: MAX_SPACEPOINTS + 1]
    return {
        "MODULE_ID INT32": (
            [f, ("MODULE_ID", ids.astype(np.int32), "INT32")],
            ["MODULE_ID", "INT32"],
        ),
        "MODULE_ID FP32": (
            [f, ("MODULE_ID", ids.astype(np.float32), "FP32")],
            ["MODULE_ID", "FP32"],
        ),
        "MODULE_ID rank 2": (
            [f, ("MODULE_ID", ids.reshape(-1, 1), "INT64")],
            ["MODULE_ID", "shape"],
        ),
        "MODULE_ID too long": (
            [f, ("MODULE_ID", np.arange(n + 5, dtype=np.int64), "INT64")],
            ["MODULE_ID", str(n + 5), str(n)],
        ),
        "FEATURES FP16": ([("FEATURES", x.astype(np.float16), "FP16")], ["FEATURES", "FP16"]),
        "FEATURES INT64": ([("FEATURES", x.astype(np.int64), "INT64")], ["FEATURES", "INT64"]),
        "FEATURES rank 3": ([("FEATURES", x.reshape(n, 3, 3), "FP32")], ["FEATURES", "shape"]),
        "no columns": ([("FEATURES", np.zeros((n, 0), np.float32), "FP32")], ["0 feature columns"]),
        "empty, 3 columns": (
            [("FEATURES", np.zeros((0, 3), np.float32), "FP32")],
            ["3 feature columns"],
        ),
        "10 columns": (
            [("FEATURES", np.ascontiguousarray(np.c_[x, x[:, :1]]), "FP32")],
            ["10 feature columns"],
        ),
        "unknown input": ([f, ("HITS", x, "FP32")], ["HITS"]),
        "phi in radians": (
            [("FEATURES", with_column(x, [1, 4, 7], np.pi, 3.0, row=9), "FP32")],
            ["FEATURES[", "phi/pi"],
        ),
        "r in mm": (
            [("FEATURES", with_column(x, [0, 3, 6], 1000.0, 700.0, row=4), "FP32")],
            ["FEATURES[", "r/1000"],
        ),
        "z in mm": (
            [("FEATURES", with_column(x, [2, 5, 8], 1000.0, -1500.0, row=4), "FP32")],
            ["FEATURES[", "z/1000"],
        ),
        "x, y, z instead of r, phi, z": (
            [("FEATURES", cartesian, "FP32")],
            ["FEATURES[0, 0] = -0.25", "r/1000"],
        ),
        "cluster in mm": (
            [("FEATURES", with_column(x, [6], 1.0, 820.0, row=2), "FP32")],
            ["FEATURES[2, 6] = 820", "cluster 2"],
        ),
        "-inf": (
            [("FEATURES", with_column(x, [2], 1.0, -np.inf, row=8), "FP32")],
            ["FEATURES[8, 2]", "inf"],
        ),
        "one above max_spacepoints": (
            [("FEATURES", too_many, "FP32")],
            ["FEATURES", str(MAX_SPACEPOINTS + 1), "max_spacepoints"],
        ),
    }


CASES = list(bad_requests(testing.synthetic_features(400, seed=11)))


@pytest.mark.parametrize("case", CASES)
def test_bad_request_fails_alone_and_the_next_is_served(case, client, event, reference):
    inputs, words = bad_requests(event)[case]
    with pytest.raises(InferenceServerException) as raised:
        infer(client, inputs, request_id=f"bad-{case}")
    message = str(raised.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert "frame #" not in message and "Exception raised from" not in message, message
    assert_serves(client, event, reference)


def test_an_output_asked_for_twice_is_answered_once(client, event, reference):
    result = infer(client, [("FEATURES", event, "FP32")], outputs=("LABELS", "LABELS"))
    assert [o.name for o in result.get_response().outputs] == ["LABELS"]
    np.testing.assert_array_equal(result.as_numpy("LABELS"), reference)


def test_exactly_max_spacepoints_is_served(client, event):
    x = np.tile(event, (MAX_SPACEPOINTS // len(event) + 1, 1))[:MAX_SPACEPOINTS]
    labels = infer(client, [("FEATURES", x, "FP32")]).as_numpy("LABELS")
    assert labels.shape == (MAX_SPACEPOINTS,)


def test_features_at_the_edges_of_the_bounds_are_served(client, event):
    # phi/pi = +-1 exactly (and one float step beyond, from rounding), r = 0.
    x = event.copy()
    x[0, [1, 4, 7]] = 1.0
    x[1, [1, 4, 7]] = np.nextafter(np.float32(-1.0), np.float32(-2.0))
    x[2, [0, 3, 6]] = 0.0
    assert infer(client, [("FEATURES", x, "FP32")]).as_numpy("LABELS").shape == (len(x),)


def http_post(server, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/exatrkx/infer",
        data=body,
        headers=headers or {},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def json_body(shape, data, datatype="FP32") -> bytes:
    return json.dumps(
        {
            "inputs": [{"name": "FEATURES", "shape": shape, "datatype": datatype, "data": data}],
            "outputs": [{"name": "LABELS"}],
        }
    ).encode()


def malformed_http(x: np.ndarray) -> dict:
    """name -> (body, headers, words the error must hold)."""
    good_data = x[:3].reshape(-1).tolist()
    binary = x[:2].tobytes()
    huge_header = json.dumps(
        {
            "inputs": [
                {
                    "name": "FEATURES",
                    "shape": [100_000_000, 9],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(binary)},
                }
            ],
            "outputs": [{"name": "LABELS"}],
        }
    ).encode()
    return {
        "not JSON": (b"{ this is not json", {}, []),
        "negative shape": (json_body([-3, 9], good_data), {}, ["shape"]),
        "too few values": (json_body([10, 9], good_data), {}, ["data"]),
        "strings as floats": (json_body([1, 9], ["a"] * 9), {}, []),
        "huge shape, tiny data": (
            huge_header + binary,
            {"Inference-Header-Content-Length": str(len(huge_header))},
            ["FEATURES"],
        ),
        "header length beyond the body": (
            json_body([3, 9], good_data),
            {"Inference-Header-Content-Length": "100000"},
            [],
        ),
    }


@pytest.mark.parametrize("case", list(malformed_http(testing.synthetic_features(10))))
def test_malformed_http_body_is_refused(case, server, client, event, reference):
    body, headers, words = malformed_http(event)[case]
    status, text = http_post(server, body, headers)
    # Triton's HTTP front end answers what it cannot parse with 500, the rest with 400; the
    # backend never sees these requests.
    assert status in (400, 500), f"{case}: HTTP {status}: {text}"
    assert json.loads(text)["error"], text
    for word in words:
        assert word in text, f"{case}: {word!r} not in {text!r}"
    assert_serves(client, event, reference)


def test_good_and_bad_requests_at_once(server, event, reference):
    """Twenty-four requests from six threads, a third of them bad: each good one gets its own
    right answer, each bad one its own error."""
    bad = bad_requests(event)
    names = ["r in mm", "MODULE_ID too long", "-inf", "10 columns"]

    def send(i):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        if i % 3 == 2:
            name = names[i % len(names)]
            with pytest.raises(InferenceServerException) as raised:
                infer(client, bad[name][0], request_id=f"mixed-{i}")
            return name, str(raised.value)
        return None, infer(client, [("FEATURES", event, "FP32")], request_id=f"mixed-{i}")

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(send, range(24)))
    for i, (name, outcome) in enumerate(outcomes):
        if name is None:
            np.testing.assert_array_equal(outcome.as_numpy("LABELS"), reference)
        else:
            assert f"mixed-{i}" in outcome, outcome  # the error is this request's own
            for word in bad[name][1]:
                assert word in outcome, f"{name}: {word!r} not in {outcome!r}"
