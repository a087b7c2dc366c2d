"""Model-load faults through the repository API (explicit model control, tritonclient):
missing, cut or foreign TorchScript files, networks with the wrong interface, bad module maps,
invalid parameters and file names that leave the model folder. Each broken model fails to
load with a message naming the file or setting, in the load error, the repository index and
the server log; a good copy of the model beside it keeps serving; once the files are fixed the
same model loads."""

from __future__ import annotations

import shutil
import time
import warnings

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from exatrkx import testing
from exatrkx.server import TritonServer
from exatrkx_client import ExaTrkXClient

GOOD_COPY = "exatrkx_copy"


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend_directory):
    tmp = tmp_path_factory.mktemp("robust_loading")
    repo = tmp / "repo"
    testing.make_model_repository(repo)
    testing.make_model_repository(repo, model_name=GOOD_COPY)
    server = TritonServer(
        repo,
        backend_directory=backend_directory,
        models=("exatrkx", GOOD_COPY),
        model_control_mode="explicit",
        log_path=tmp / "tritonserver.log",
        # After a failed reload of a loaded model, Triton 2.51 counts one model as live until
        # its exit timeout (30 s by default) whatever the backend does: keep that wait short.
        extra_args=("--exit-timeout-secs=3",),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return grpcclient.InferenceServerClient(server.grpc_url)


@pytest.fixture(scope="module")
def event():
    return testing.synthetic_features(300, seed=5)


def script(module: torch.nn.Module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module.eval()).save(str(path))


class PerNodeGNN(torch.nn.Module):
    """The right signature, but one score per spacepoint instead of per edge."""

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return x[:, 0]

    @torch.jit.export
    def num_features(self) -> int:
        return 9


class NoNumFeatures(torch.nn.Module):
    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return x[edge_index[0], 0]


class TupleFilter(PerNodeGNN):
    """Returns a tuple, not a tensor."""

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor):  # noqa: D102
        return x[edge_index[0], 0], x[edge_index[1], 0]


class TwelveFeatures(torch.nn.Module):
    """Claims 12 features while its layers read 9: fails inside forward."""

    def __init__(self):
        super().__init__()
        self.inner = testing.InteractionGNN(9)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.inner(x, edge_index)

    @torch.jit.export
    def num_features(self) -> int:
        return 12


def cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


MAP_HEADER = (
    "module_a,module_b,count,dphi_min,dphi_max,z0_min,z0_max,"
    "phislope_min,phislope_max,deta_min,deta_max\n"
)
MODULE_MAP = {"graph_construction": "module_map"}

# name -> (parameters, how to break the version folder, words of the error message)
FAULTS = {
    "missing gnn.pt": ({}, lambda v: (v / "gnn.pt").unlink(), ["gnn.pt", "no such file"]),
    "cut gnn.pt": ({}, lambda v: cut(v / "gnn.pt"), ["gnn.pt", "not a loadable TorchScript"]),
    "CSV as embed.pt": (
        {},
        lambda v: (v / "embed.pt").write_text(MAP_HEADER),
        ["embed.pt", "not a loadable TorchScript"],
    ),
    "no num_features()": (
        {},
        lambda v: script(NoNumFeatures(), v / "filter.pt"),
        ["filter.pt", "num_features()"],
    ),
    "GNN forward(x)": (
        {},
        lambda v: shutil.copy(v / "embed.pt", v / "gnn.pt"),
        ["gnn.pt", "forward(x: f32[3, 9], edge_index: i64[2, 2]) failed"],
    ),
    "GNN scores per spacepoint": (
        {},
        lambda v: script(PerNodeGNN(), v / "gnn.pt"),
        ["gnn.pt", "shape [3]", "expected floats of shape [2]"],
    ),
    "filter returns a tuple": (
        {},
        lambda v: script(TupleFilter(), v / "filter.pt"),
        ["filter.pt", "expected a tensor"],
    ),
    "num_features() disagrees with the layers": (
        {},
        lambda v: script(TwelveFeatures(), v / "gnn.pt"),
        ["gnn.pt", "mat1 and mat2 shapes cannot be multiplied"],
    ),
    "embedding without embedding_dim()": (
        {},
        lambda v: shutil.copy(v / "filter.pt", v / "embed.pt"),
        ["embed.pt", "embedding_dim()"],
    ),
    "module map not CSV": (
        MODULE_MAP,
        lambda v: (v / "module_map.csv").write_bytes(b"\x00\xff\x10garbage"),
        ["module_map.csv"],
    ),
    "module map header": (
        MODULE_MAP,
        lambda v: (v / "module_map.csv").write_text("a,b,c\n1,2,3\n"),
        ["module_map.csv", "header"],
    ),
    "module map field": (
        MODULE_MAP,
        lambda v: (v / "module_map.csv").write_text(
            MAP_HEADER + "800200001,800400001,5,-0.1,0.1,-100,100,-1,1,-0.2,zero\n"
        ),
        ["module_map.csv", "line 2", "deta_max", "zero"],
    ),
    "module map short line": (
        MODULE_MAP,
        lambda v: (v / "module_map.csv").write_text(MAP_HEADER + "800200001,800400001,5\n"),
        ["module_map.csv", "line 2", "3 fields"],
    ),
    "module map missing": (
        MODULE_MAP,
        lambda v: None,
        ["module_map.csv"],
    ),
    "negative radius": ({"radius": "-0.5"}, None, ["radius", "-0.5"]),
    "filter_cut 1": ({"filter_cut": "1"}, None, ["filter_cut", "[0, 1)"]),
    "gnn_cut below 0": ({"gnn_cut": "-0.01"}, None, ["gnn_cut", "[0, 1)"]),
    "unknown track builder": ({"track_builder": "kalman"}, None, ["track_builder", "kalman"]),
    "unknown parameter": ({"radious": "0.1"}, None, ["unknown parameter 'radious'"]),
    "knn zero": ({"knn": "0"}, None, ["knn"]),
    "max_spacepoints not a number": (
        {"max_spacepoints": "lots"},
        None,
        ["max_spacepoints", "lots"],
    ),
    "model file up and out": (
        {"gnn_model": "../../exatrkx/1/gnn.pt"},
        None,
        ["gnn_model", "no '..'"],
    ),
    "absolute model file": ({"filter_model": "/etc/hostname"}, None, ["filter_model"]),
    "placeholder out of the version folder": (
        {"embedding_model": "$$TRITON_MODEL_DIRECTORY/../exatrkx/1/embed.pt"},
        None,
        ["embedding_model", "not a file inside the model version folder"],
    ),
    "placeholder with .. inside": (
        {"gnn_model": "$$TRITON_MODEL_DIRECTORY/1/../../exatrkx/1/gnn.pt"},
        None,
        ["gnn_model"],
    ),
}


def model_name(fault: str) -> str:
    return "broken_" + "".join(c if c.isalnum() else "_" for c in fault)


def index_reason(client, name: str) -> str:
    for entry in client.get_model_repository_index(as_json=True).get("models", []):
        if entry["name"] == name:
            assert entry.get("state") == "UNAVAILABLE", entry
            return entry.get("reason", "")
    raise AssertionError(f"{name} not in the repository index")


@pytest.mark.parametrize("fault", list(FAULTS))
def test_broken_model_fails_to_load_with_a_clear_message(fault, server, client, event):
    parameters, breaking, words = FAULTS[fault]
    name = model_name(fault)
    testing.make_model_repository(server.model_repository, model_name=name, parameters=parameters)
    if breaking is not None:
        breaking(server.model_repository / name / "1")
    with pytest.raises(InferenceServerException) as raised:
        client.load_model(name)
    message = str(raised.value)
    reason = index_reason(client, name)
    log = server.log_text()
    for word in words:
        assert word in message, f"{fault}: {word!r} not in {message!r}"
        assert word in reason, f"{fault}: {word!r} not in the index reason {reason!r}"
    assert any(name in line and words[0] in line for line in log.splitlines() if line[:1] == "E")
    # libtorch's C++ stack frames stay out of the message.
    assert "frame #" not in message and "Exception raised from" not in message, message
    assert not client.is_model_ready(name)
    # The other models are untouched.
    for good in ("exatrkx", GOOD_COPY):
        assert client.is_model_ready(good)
    with ExaTrkXClient(server.grpc_url, model=GOOD_COPY) as good:
        assert good.infer(event)["LABELS"].shape == (len(event),)


def test_fixed_files_load_and_serve(server, client, event):
    """A broken model loads once its files are replaced, and answers like the good copy."""
    name = "repaired"
    testing.make_model_repository(server.model_repository, model_name=name)
    version = server.model_repository / name / "1"
    cut(version / "gnn.pt")
    script(PerNodeGNN(), version / "filter.pt")
    with pytest.raises(InferenceServerException):
        client.load_model(name)
    testing.write_random_models(version, seed=0)  # the same seeded models as the good copy
    client.load_model(name)
    assert client.is_model_ready(name)
    with (
        ExaTrkXClient(server.grpc_url, model=name) as repaired,
        ExaTrkXClient(server.grpc_url, model=GOOD_COPY) as good,
    ):
        np.testing.assert_array_equal(repaired.infer(event)["LABELS"], good.infer(event)["LABELS"])
    # Breaking it again and reloading: Triton keeps serving the loaded version.
    cut(version / "embed.pt")
    with pytest.raises(InferenceServerException) as raised:
        client.load_model(name)
    assert "embed.pt" in str(raised.value)
    assert client.is_model_ready(name)
    with ExaTrkXClient(server.grpc_url, model=name) as kept:
        assert kept.infer(event)["LABELS"].shape == (len(event),)
    client.unload_model(name)


def test_every_model_unloaded_then_loaded_again(server, client, event):
    """Every model unloaded, then loaded again: the instances are finalised and created anew
    and serve. (Triton 2.51 keeps the backend library loaded meanwhile; a server that unloads
    it runs the backend's initialisation again, which resets its exit flag.)"""
    loaded = [
        m["name"]
        for m in client.get_model_repository_index(as_json=True)["models"]
        if m.get("state") == "READY"
    ]
    for name in loaded:
        client.unload_model(name, unload_dependents=True)
    deadline = time.monotonic() + 60
    while any(client.is_model_ready(m) for m in loaded):
        assert time.monotonic() < deadline, "models did not unload"
        time.sleep(0.2)
    for name in ("exatrkx", GOOD_COPY):
        client.load_model(name)
    with ExaTrkXClient(server.grpc_url) as again:
        assert again.infer(event)["LABELS"].shape == (len(event),)
    assert server.is_running()
