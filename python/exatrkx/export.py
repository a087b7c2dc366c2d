"""TorchScript export of the trained networks and a forward-time benchmark of exported files.

Exported modules are scripted (`torch.jit.script`, no tracing: shapes vary per event), in eval
mode, with contiguous fp32 CPU weights, and are not frozen so that the backend can still
convert them to bf16. `export` reloads the file and checks it against the Python module.

    python -m exatrkx.export bench --models DIR [--spacepoints 100000] [--edges 1000000]
        [--gnn-edges 300000] [--filter-chunk 16384] [--precision fp32 bf16] [--threads 2]
    python -m exatrkx.export rescript --model FILE --out FILE

`rescript` exports a filter or GNN file again with this code's forward (the same weights and
function; e.g. the chunked CPU inference of `models.layers.edge_chunks`), checking that the
new file gives the old one's outputs.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from exatrkx.models.cost import synthetic_inputs
from exatrkx.models.layers import ACTIVATIONS
from exatrkx.models.networks import FilterNet, build_gnn


def script(net: nn.Module) -> torch.jit.ScriptModule:
    """A scripted copy of `net`: CPU, fp32, eval mode, contiguous parameters."""
    net = copy.deepcopy(net).cpu().float().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.data = p.data.contiguous()
        for b in net.buffers():
            b.data = b.data.contiguous()
    for p in net.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():
        # TorchScript is what libtorch (tch) loads without Python: deprecated, still required
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        return torch.jit.script(net)


def strip_debug_info(path: Path) -> Path:
    """Drop the `*.debug_pkl` members of a saved TorchScript archive in place. They hold source
    ranges with the absolute paths of the exporting machine's Python files (not wanted in
    committed models); libtorch and torch load the archive the same without them."""
    path = Path(path)
    tmp = path.with_name(path.name + ".strip")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info, src.read(info.filename))
    tmp.replace(path)
    return path


def save_scripted(module: torch.jit.ScriptModule, path: Path) -> Path:
    """Save a scripted module without debug information (see `strip_debug_info`)."""
    module.save(str(path))
    return strip_debug_info(path)


def load(path: Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device)


def _call(module, x: torch.Tensor, edge_index: torch.Tensor | None) -> torch.Tensor:
    return module(x) if edge_index is None else module(x, edge_index)


def export(
    net: nn.Module,
    path: Path,
    x: torch.Tensor,
    edge_index: torch.Tensor | None = None,
    atol: float = 1e-5,
) -> Path:
    """Script `net` into `path` and check that the reloaded file gives the Python module's
    outputs on (x[, edge_index]) and reports 9 features; raises if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = script(net)
    tmp = path.with_suffix(".tmp")
    save_scripted(scripted, tmp)
    loaded = load(tmp)
    reference = copy.deepcopy(net).cpu().float().eval()
    with torch.no_grad():
        want = _call(reference, x.cpu(), None if edge_index is None else edge_index.cpu())
        got = _call(loaded, x.cpu(), None if edge_index is None else edge_index.cpu())
    if got.shape != want.shape or not torch.allclose(got, want, atol=atol, rtol=1e-5):
        raise RuntimeError(f"{path}: the scripted module disagrees with the Python module")
    # the track-quality network reads track rows, the others spacepoint features
    width_method = "num_track_features" if hasattr(loaded, "num_track_features") else "num_features"
    width = getattr(loaded, width_method)()
    if width != x.shape[1]:
        raise RuntimeError(f"{path}: {width_method}() = {width}, not {x.shape[1]}")
    tmp.replace(path)
    return path


def _linear_weights(state: dict, prefix: str) -> list[torch.Tensor]:
    """The 2-d weights (linear layers) of the sequential `prefix`, in order."""
    found = []
    for key, value in state.items():
        rest = key[len(prefix) :] if key.startswith(prefix) else ""
        if rest.endswith(".weight") and rest[:-7].isdigit() and value.dim() == 2:
            found.append((int(rest[:-7]), value))
    return [w for _, w in sorted(found, key=lambda item: item[0])]


def rebuild(path: Path) -> nn.Module:
    """The Python network of an exported filter or GNN file: its shape read from the weights
    (activation from the scripted module's layers), the weights loaded, eval mode."""
    old = load(path)
    state = old.state_dict()
    names = {m.original_name for m in old.modules() if hasattr(m, "original_name")}
    found = [a for a, cls in ACTIVATIONS.items() if cls.__name__ in names]
    if len(found) != 1:
        raise ValueError(f"{path}: cannot tell the activation from {sorted(names)}")
    activation = found[0]
    layer_norm = any(v.dim() == 1 and k.endswith(".weight") for k, v in state.items())
    if "mlp.0.weight" in state and not hasattr(old, "embedding_dim"):
        linears = _linear_weights(state, "mlp.")
        net: nn.Module = FilterNet(
            num_features=old.num_features(),
            hidden=linears[0].shape[0],
            layers=len(linears) - 1,
            activation=activation,
            layer_norm=layer_norm,
        )
    elif "node_encoder.0.weight" in state:
        hetero = "pixel_encoder.0.weight" in state
        steps = {k.split(".")[1] for k in state if k.startswith("steps.")}
        kwargs = dict(
            num_features=old.num_features(),
            hidden=state["node_encoder.0.weight"].shape[0],
            iterations=len(steps),
            layers=len(_linear_weights(state, "node_encoder.")),
            activation=activation,
            layer_norm=layer_norm,
        )
        if not hetero:
            wide = state["node_encoder.0.weight"].shape[1] > 5
            kwargs["node_columns"] = old.num_features() if wide else 3
        net = build_gnn("hetero" if hetero else "plain", **kwargs)
    else:
        raise ValueError(f"{path}: not a filter or GNN file of this package")
    net.load_state_dict(state)
    return net.eval()


def rescript(path: Path, out: Path, spacepoints: int = 2000, edges: int = 50_000) -> Path:
    """Export `path` again with this code (`rebuild`); raises unless the new file gives the
    old file's logits (to 1e-4) on synthetic inputs larger than one CPU chunk."""
    net = rebuild(path)
    x, edge_index = synthetic_inputs(spacepoints, edges, seed=1)
    with torch.no_grad():
        want = load(path)(x, edge_index)
    out = Path(out)
    fresh = export(net, out.with_name(out.name + ".new"), x, edge_index)
    with torch.no_grad():
        got = load(fresh)(x, edge_index)
    if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        fresh.unlink()
        worst = (got - want).abs().max().item()
        raise RuntimeError(f"{path}: the rescripted network differs by up to {worst:.3g}")
    return fresh.replace(out)


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch CPU threads (0: leave them). On a machine shared with other
    jobs, a second OpenMP thread that spins while its core is taken can cost 10-100x."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_forward(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    return best


def bench(
    models: Path,
    spacepoints: int,
    edges: int,
    gnn_edges: int,
    filter_chunk: int,
    precisions: list[str],
    repeats: int = 2,
) -> list[dict]:
    """Forward time of embed.pt, filter.pt (in chunks, as the pipeline calls it) and gnn.pt
    on synthetic inputs of the given sizes; one row per (model, precision)."""
    x, edge_index = synthetic_inputs(spacepoints, edges)
    gnn_index = edge_index[:, :gnn_edges]
    rows = []
    for precision in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        for name in ("embed", "filter", "gnn"):
            path = Path(models) / f"{name}.pt"
            if not path.exists():
                continue
            module = load(path)
            module.to(dtype)
            if name == "embed":
                seconds = time_forward(lambda m=module: m(x), repeats)
                size = spacepoints
            elif name == "filter":

                def run(m=module):
                    for start in range(0, edges, filter_chunk):
                        m(x, edge_index[:, start : start + filter_chunk])

                seconds = time_forward(run, repeats)
                size = edges
            else:
                seconds = time_forward(lambda m=module: m(x, gnn_index), repeats)
                size = gnn_index.shape[1]
            rows.append({"model": name, "precision": precision, "size": size, "seconds": seconds})
            print(f"{name:>7} {precision:>5} size {size:>9}  {seconds:8.3f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exatrkx.export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="forward time of exported models on synthetic inputs")
    b.add_argument(
        "--models", type=Path, required=True, help="folder with embed.pt, filter.pt, gnn.pt"
    )
    b.add_argument("--spacepoints", type=int, default=100_000)
    b.add_argument("--edges", type=int, default=1_000_000, help="filter input edges")
    b.add_argument("--gnn-edges", type=int, default=300_000, help="GNN input edges")
    b.add_argument("--filter-chunk", type=int, default=16384)
    b.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    b.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    b.add_argument("--repeats", type=int, default=2)
    r = sub.add_parser("rescript", help="export a filter or GNN file again with this code")
    r.add_argument("--model", type=Path, required=True, help="the exported file")
    r.add_argument("--out", type=Path, required=True, help="where to write (may be --model)")
    args = parser.parse_args(argv)
    if args.command == "rescript":
        rescript(args.model, args.out)
        print(f"{args.out}: same outputs as {args.model}")
        return
    with torch_threads(args.threads):
        print(f"torch threads {torch.get_num_threads()}")
        bench(
            args.models,
            args.spacepoints,
            args.edges,
            args.gnn_edges,
            args.filter_chunk,
            args.precision,
            args.repeats,
        )


if __name__ == "__main__":
    main()
