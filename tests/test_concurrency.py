"""Several requests at once: each is its own event with its own answer.

With `max_batch_size: 0` Triton hands a backend one request per execute call, whatever the
scheduler (the dynamic batcher caps a batch at max(1, max_batch_size) requests); concurrency
comes from model instances instead. Two instances, each with its own pipeline, serve requests
sent together; the log and the statistics show how they were grouped. (The execute loop over
several requests in one call is unit-tested in `triton/src/backend.rs` against a fake Triton.)
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import InProcess, start_server

REQUESTS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("concurrency")
    server = start_server(
        tmp,
        backend_directory,
        instance_count=2,
        extra_config="dynamic_batching { max_queue_delay_microseconds: 100000 }",
    )
    yield server
    server.stop()


def test_concurrent_requests_each_get_their_own_answer(server, features, tmp_path):
    # Different events: disjoint slices of different sizes.
    sizes = [300 + 150 * i for i in range(REQUESTS)]
    starts = np.cumsum([0, *sizes[:-1]])
    events = [features[s : s + n] for s, n in zip(starts, sizes, strict=True)]
    assert sum(sizes) <= len(features)
    expected = [InProcess(server, "exatrkx", tmp_path).run(x)["LABELS"] for x in events]

    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = {
        s["name"]: s for s in server.model_statistics()["model_stats"] if s["name"] == "exatrkx"
    }["exatrkx"]

    def send(i):
        inp = grpcclient.InferInput("FEATURES", list(events[i].shape), "FP32")
        inp.set_data_from_numpy(events[i])
        result = client.infer(
            "exatrkx",
            [inp],
            outputs=[grpcclient.InferRequestedOutput("LABELS")],
            request_id=f"event-{i}",
        )
        return result.as_numpy("LABELS")

    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = list(pool.map(send, range(REQUESTS)))
    for i, (got, want) in enumerate(zip(answers, expected, strict=True)):
        assert got.shape == (sizes[i],)
        np.testing.assert_array_equal(got, want, err_msg=f"request {i}")
    # Not all alike: the events differ, so must their labels.
    assert len({a.tobytes() for a in answers}) == REQUESTS

    stats = server.model_statistics()["model_stats"][0]
    assert stats["inference_count"] - before["inference_count"] == REQUESTS
    assert stats["execution_count"] - before["execution_count"] == REQUESTS
    # Both instances worked (the log names the instance of every execute call).
    log = server.log_text()
    executes = re.findall(r"model instance '(exatrkx_0_\d)': execute with (\d+) request", log)
    assert {name for name, _ in executes} == {"exatrkx_0_0", "exatrkx_0_1"}
    assert all(count == "1" for _, count in executes)
