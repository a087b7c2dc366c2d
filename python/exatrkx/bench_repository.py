"""The benchmark's server: the exatrkx model and its Python peer in one tritonserver.

The peer (`exatrkx_ensemble`) is the same pipeline as a Triton ensemble of Python-backend
steps (`bench/ensemble/`: embedding, graph, filter, GNN, track building), each running
`bench/ensemble/model.py` on the exatrkx model's TorchScript files and parameters.

    repo = write_bench_repository("model_repository", "results/bench/repository", instances=2)
    backends = prepare_backend_directory("build/bench/backends")
    with running_bench_server(repo, backends) as server: ...

Triton's Python backend ships in nvidia-pytriton without its stub in the backend folder, so
`prepare_backend_directory` lays out `python/` (library, utilities, the stub of this Python
version) next to `exatrkx/`. The stub embeds Python in isolated mode (environment variables
such as PYTHONPATH are ignored) and takes its `sys.prefix` from the `python3` it finds on PATH:
with the venv's `bin/` first on PATH it runs on the venv's site-packages (`stub_environment`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

from exatrkx import paths, reference, testing
from exatrkx.server import ServerError, TritonServer

ENSEMBLE_TEMPLATE = paths.REPO_ROOT / "bench" / "ensemble"
STEP_MODEL = ENSEMBLE_TEMPLATE / "model.py"
MODEL = "exatrkx"
ENSEMBLE = "exatrkx_ensemble"
# Steps of the ensemble per graph construction, in pipeline order.
STEPS = {
    "radius": (
        "exatrkx_py_embedding",
        "exatrkx_py_radius_graph",
        "exatrkx_py_filter",
        "exatrkx_py_gnn",
        "exatrkx_py_tracks",
    ),
    "module_map": (
        "exatrkx_py_module_map_graph",
        "exatrkx_py_filter",
        "exatrkx_py_gnn",
        "exatrkx_py_tracks",
    ),
}
# Every configuration is complete: without auto-completion the Python backend does not start
# an extra stub per model at load time (each stub imports torch: seconds on a small machine).
# Python backend shared memory per stub: an event's edge list is tens of MB, so regions
# start and grow in large steps rather than Triton's default 1 MB.
SERVER_ARGS = (
    "--disable-auto-complete-config",
    "--backend-config=python,shm-default-byte-size=67108864",
    "--backend-config=python,shm-growth-byte-size=67108864",
)


def pytriton_server_dir() -> Path:
    """`pytriton/tritonserver` of the installed nvidia-pytriton."""
    spec = importlib.util.find_spec("pytriton")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "tritonserver"
        if (candidate / "backends" / "python" / "libtriton_python.so").is_file():
            return candidate
    raise ServerError("nvidia-pytriton's Python backend not found: run `make setup`")


def pytriton_libs_dir() -> Path:
    """The shared libraries bundled with nvidia-pytriton (libcudart, libb64, ...)."""
    libs = pytriton_server_dir().parents[1] / "nvidia_pytriton.libs"
    if not libs.is_dir():
        raise ServerError(f"{libs} not found: nvidia-pytriton installation incomplete")
    return libs


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.unlink()
    link.symlink_to(target)


def prepare_backend_directory(
    dest: str | Path, exatrkx_backend: str | Path = paths.BACKEND_DIR / "exatrkx"
) -> Path:
    """A backend directory holding `exatrkx/` (a link to the built backend) and `python/`
    (Triton's Python backend with the stub for this interpreter's version)."""
    dest = Path(dest).resolve()
    exatrkx_backend = Path(exatrkx_backend).resolve()
    if not (exatrkx_backend / "libtriton_exatrkx.so").is_file():
        raise ServerError(f"{exatrkx_backend}/libtriton_exatrkx.so not found: run `make setup`")
    server_dir = pytriton_server_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"no Python backend stub for Python {version} in {stub.parent.parent}")
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _link(server_dir / "backends" / "python" / name, python_dir / name)
    _link(stub, python_dir / "triton_python_backend_stub")
    _link(exatrkx_backend, dest / "exatrkx")
    return dest


def stub_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH for tritonserver so that the Python backend's stubs run this
    interpreter's libpython on this venv's site-packages, with pytriton's bundled libraries."""
    environ = dict(os.environ if environ is None else environ)
    venv_bin = str(Path(sys.executable).parent)
    library_dirs = [str(pytriton_libs_dir())]
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).is_file():
        library_dirs.insert(0, libdir)
    path = [venv_bin] + [p for p in environ.get("PATH", "").split(os.pathsep) if p]
    library_path = library_dirs + [
        p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p
    ]
    return {"PATH": os.pathsep.join(path), "LD_LIBRARY_PATH": os.pathsep.join(library_path)}


@contextlib.contextmanager
def environment(changes: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (child processes inherit)."""
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def replace_list_field(config_text: str, field: str, replacement: str) -> str:
    """Replace the top-level `field [ ... ]` of config.pbtxt text (brackets matched, on one
    line or several) by `replacement`."""
    match = re.search(rf"^\s*{field}\s*:?\s*\[", config_text, flags=re.M)
    if match is None:
        raise ValueError(f"config.pbtxt has no `{field} [ ... ]` list")
    depth, end, pos = 0, None, match.end() - 1
    while pos < len(config_text):
        char = config_text[pos]
        if char == "#":  # comments (which may hold brackets) run to the end of the line
            newline = config_text.find("\n", pos)
            pos = len(config_text) if newline < 0 else newline
            continue
        if char == '"':  # so do strings, to their closing quote
            closing = re.compile(r'(?:[^"\\]|\\.)*"').match(config_text, pos + 1)
            pos = len(config_text) if closing is None else closing.end()
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        pos += 1
        if depth == 0:
            end = pos
            break
    if end is None:
        raise ValueError(f"config.pbtxt: unbalanced brackets in `{field}`")
    start = match.start() + len(match.group(0)) - len(match.group(0).lstrip())
    return config_text[:start] + replacement + config_text[end:]


def set_instances(config_text: str, count: int) -> str:
    """`count` CPU instances."""
    return replace_list_field(
        config_text, "instance_group", f"instance_group [ {{ kind: KIND_CPU count: {count} }} ]"
    )


def labels_only(config_text: str) -> str:
    """The configuration with `LABELS` as its only output. perf_analyzer asks for every output
    a model declares, and the exatrkx backend computes the optional ones (edges, track fits)
    only when asked; the ensemble declares LABELS alone, so both then do the same work."""
    return replace_list_field(
        config_text, "output", 'output [ { name: "LABELS" data_type: TYPE_INT64 dims: [ -1 ] } ]'
    )


def pipeline_parameters(config_text: str) -> dict[str, str]:
    """The pipeline parameters (docs/DESIGN.md keys) set in a config.pbtxt, as written."""
    raw = reference.parse_pbtxt_parameters(config_text)
    return {k: v for k, v in raw.items() if k in reference.PARAMETER_KEYS}


def _needed_files(params: reference.PipelineParameters) -> list[str]:
    files = [params.filter_model, *_gnn_files(params)]
    if params.track_model:
        files.append(params.track_model)
    if params.graph_construction == "radius":
        return [params.embedding_model, *files]
    return [params.module_map, *files]


def _gnn_files(params: reference.PipelineParameters) -> list[str]:
    files = [params.gnn_model, *reference.gnn_refine_files(params)]
    return list(dict.fromkeys(files))  # each file once, in pass order


def _stage_files(stage: str, params: reference.PipelineParameters) -> list[str]:
    return {
        "embedding": [params.embedding_model],
        "module_map_graph": [params.module_map],
        "filter": [params.filter_model],
        "gnn": _gnn_files(params),
        "tracks": [params.track_model] if params.track_model else [],
    }.get(stage, [])


def write_bench_repository(
    source: str | Path,
    dest: str | Path,
    *,
    instances: int = 1,
    model_name: str = MODEL,
    version: str = "1",
    overrides: dict[str, str] | None = None,
    python_path: str | Path = paths.REPO_ROOT / "python",
) -> Path:
    """A model repository under `dest` with `exatrkx` (the source model's configuration,
    LABELS as its only output, `instances` CPU instances, links to its model files) and the
    ensemble of Python steps with the same parameters (`overrides` applied to both) and
    `instances` instances per step. `source` is the model folder or the repository holding
    `model_name`. Returns `dest`."""
    folder = reference.model_folder(Path(source), model_name)
    source_version = folder / version
    text = (folder / "config.pbtxt").read_text()
    params = reference.load_parameters(folder, overrides)
    missing = [f for f in _needed_files(params) if not (source_version / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{source_version}: missing model files {', '.join(missing)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.iterdir():  # a previous layout (other steps, other instance counts)
        if (stale / "config.pbtxt").exists():
            shutil.rmtree(stale)

    exatrkx_text = re.sub(r'^name:\s*"[^"]*"', f'name: "{MODEL}"', text, count=1, flags=re.M)
    exatrkx_text = testing.set_parameters(exatrkx_text, overrides or {})
    exatrkx_text = set_instances(labels_only(exatrkx_text), instances)
    files = {p.name: p for p in source_version.iterdir() if not p.name.startswith(".")}
    _write_model(dest / MODEL, exatrkx_text, files)

    step_parameters = pipeline_parameters(text) | dict(overrides or {})
    step_parameters["exatrkx_python_path"] = str(Path(python_path).resolve())
    for step in STEPS[params.graph_construction]:
        step_text = (ENSEMBLE_TEMPLATE / step / "config.pbtxt").read_text()
        stage = reference.parse_pbtxt_parameters(step_text)["stage"]
        step_text = testing.set_parameters(step_text, step_parameters)
        step_text = set_instances(step_text, instances)
        files = {"model.py": STEP_MODEL}
        files |= {f: source_version / f for f in _stage_files(stage, params)}
        _write_model(dest / step, step_text, files)
    template = (
        "config.pbtxt" if params.graph_construction == "radius" else "config.module_map.pbtxt"
    )
    ensemble_text = (ENSEMBLE_TEMPLATE / ENSEMBLE / template).read_text()
    _write_model(dest / ENSEMBLE, ensemble_text, {})
    return dest


def _write_model(model_dir: Path, config_text: str, files: dict[str, Path]) -> None:
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_text)
    for name, target in files.items():
        _link(Path(target).resolve(), version_dir / name)


@contextlib.contextmanager
def running_bench_server(
    repository: str | Path,
    backend_directory: str | Path,
    *,
    models: Sequence[str] = (MODEL, ENSEMBLE),
    log_path: str | Path | None = None,
    log_verbose: int = 0,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 300.0,
) -> Iterator[TritonServer]:
    """tritonserver on the bench repository with `models` ready, stopped after the block.
    The Python stubs start with `stub_environment` (set while the server starts)."""
    server = TritonServer(
        repository,
        backend_directory=backend_directory,
        models=list(models),
        log_path=log_path,
        log_verbose=log_verbose,
        extra_args=[*SERVER_ARGS, *extra_args],
        startup_timeout=startup_timeout,
    )
    with environment(stub_environment()):
        server.start()
    try:
        yield server
    finally:
        server.stop()
