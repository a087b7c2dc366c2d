"""Test and benchmark fixtures: small random TorchScript models with the interfaces of
docs/DESIGN.md, synthetic events (helices on barrel layers) and a module map built from them.

    python -m exatrkx.fixtures models --out DIR [--size tiny|bench] [--events DIR]
    python -m exatrkx.fixtures events --out DIR --spacepoints N [--count K] [--seed S]

`models` writes a Triton model folder: `DIR/config.pbtxt` and `DIR/1/{embed,filter,gnn}.pt`,
`DIR/1/module_map.csv`; the cuts in config.pbtxt are chosen from the models' scores on a
synthetic event so that every stage keeps a fair share of edges. Events are written as
`event%09d-features.npy` (float32 [N, 9]), `-module_ids.npy` and `-particle_ids.npy` (int64).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exatrkx.export import save_scripted
from exatrkx.models.networks import TrackQualityNet

NUM_FEATURES = 9
BARREL_RADII = (32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0)
HALF_LENGTH = 1100.0
BFIELD = 2.0


def _mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class EmbeddingNet(nn.Module):
    """Direction-like coordinates (cos phi, sin phi, eta / 2), which put the spacepoints of a
    stiff track close together, plus a small random MLP part."""

    def __init__(self, hidden: int, layers: int, dim: int, mlp_scale: float):
        super().__init__()
        self.width = NUM_FEATURES
        self.dim = dim
        self.mlp = _mlp([NUM_FEATURES] + [hidden] * layers + [dim - 3])
        self.mlp_scale = mlp_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = x[:, 1] * math.pi
        eta = torch.asinh(x[:, 2] / x[:, 0].clamp_min(1e-4))
        geo = torch.stack([torch.cos(phi), torch.sin(phi), 0.5 * eta], dim=1)
        return torch.cat([geo, self.mlp(x) * self.mlp_scale], dim=1)

    @torch.jit.export
    def num_features(self) -> int:
        return self.width

    @torch.jit.export
    def embedding_dim(self) -> int:
        return self.dim


class FilterNet(nn.Module):
    """MLP over the features of both edge ends."""

    def __init__(self, hidden: int, layers: int):
        super().__init__()
        self.width = NUM_FEATURES
        self.mlp = _mlp([2 * NUM_FEATURES] + [hidden] * layers + [1])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([x[edge_index[0]], x[edge_index[1]]], dim=1)
        return self.mlp(pair).squeeze(-1)

    @torch.jit.export
    def num_features(self) -> int:
        return self.width


class InteractionGnn(nn.Module):
    """Interaction network: node and edge encoders, residual message passing with sum
    aggregation over incoming and outgoing edges, and an edge output MLP."""

    def __init__(self, hidden: int, iterations: int):
        super().__init__()
        self.width = NUM_FEATURES
        self.hidden = hidden
        self.iterations = iterations
        self.node_encoder = _mlp([NUM_FEATURES, hidden, hidden], final_activation=True)
        self.edge_encoder = _mlp([2 * hidden, hidden, hidden], final_activation=True)
        self.edge_network = _mlp([3 * hidden, hidden, hidden], final_activation=True)
        self.node_network = _mlp([3 * hidden, hidden, hidden], final_activation=True)
        self.output = _mlp([3 * hidden, hidden, 1])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index[0], edge_index[1]
        nodes = self.node_encoder(x)
        edges = self.edge_encoder(torch.cat([nodes[src], nodes[dst]], dim=1))
        for _ in range(self.iterations):
            edges = edges + self.edge_network(torch.cat([nodes[src], nodes[dst], edges], dim=1))
            incoming = torch.zeros_like(nodes).index_add_(0, dst, edges)
            outgoing = torch.zeros_like(nodes).index_add_(0, src, edges)
            nodes = nodes + self.node_network(torch.cat([nodes, incoming, outgoing], dim=1))
        return self.output(torch.cat([nodes[src], nodes[dst], edges], dim=1)).squeeze(-1)

    @torch.jit.export
    def num_features(self) -> int:
        return self.width


# Module size (phi arc length, z length in mm) of the synthetic detector per fixture size: coarse
# for the committed test fixtures (a small module map), realistic for benchmarks.
GEOMETRY = {"tiny": (400.0, 550.0), "bench": (20.0, 60.0)}
# Module-map windows: observed range widened by these margins (dphi, z0 mm, phislope 1/mm, deta).
MARGINS = {"tiny": (0.01, 20.0, 5e-5, 0.02), "bench": (0.002, 5.0, 1e-5, 0.005)}

SIZES = {
    # name: (embedding hidden, layers, dim), (filter hidden, layers), (gnn hidden, iterations)
    "tiny": ((32, 2, 6), (32, 2), (16, 2)),
    # shaped like trained networks (REFERENCE.md): 256-wide filter, 8 GNN iterations
    "bench": ((128, 3, 8), (256, 3), (64, 8)),
}


def make_models(size: str = "tiny", seed: int = 0) -> dict[str, torch.jit.ScriptModule]:
    (eh, el, ed), (fh, fl), (gh, gi) = SIZES[size]
    torch.manual_seed(seed)
    nets = {
        "embed.pt": EmbeddingNet(eh, el, ed, mlp_scale=0.02),
        "filter.pt": FilterNet(fh, fl),
        "gnn.pt": InteractionGnn(gh, gi),
        # the real track-quality network, untrained (not part of the fixture config: tests
        # switch it on with track_model=tracks.pt); made last, so the others' weights stay
        "tracks.pt": TrackQualityNet(hidden=8, layers=1),
    }
    return {name: torch.jit.script(net.eval()) for name, net in nets.items()}


# --- synthetic events --------------------------------------------------------------------


def _module_id(layer: int, phi: np.ndarray, z: np.ndarray, phi_mm: float, z_mm: float):
    radius = BARREL_RADII[layer]
    volume = 8 if radius < 200 else (13 if radius < 700 else 17)
    n_phi = max(4, int(round(2 * math.pi * radius / phi_mm)))
    n_z = max(2, int(round(2 * HALF_LENGTH / z_mm)))
    phi_bin = np.clip(((phi + math.pi) / (2 * math.pi) * n_phi).astype(np.int64), 0, n_phi - 1)
    z_bin = np.clip(((z + HALF_LENGTH) / (2 * HALF_LENGTH) * n_z).astype(np.int64), 0, n_z - 1)
    return volume * 100_000_000 + (2 * layer + 2) * 100_000 + phi_bin * n_z + z_bin


def synthetic_event(
    spacepoints: int,
    seed: int,
    geometry: str = "bench",
    noise_fraction: float = 0.1,
) -> dict[str, np.ndarray]:
    """About `spacepoints` spacepoints: charged particles from the beam line (2 T along z)
    crossing the barrel layers, smeared, plus uniform noise; rows in random order."""
    module_phi_mm, module_z_mm = GEOMETRY[geometry]
    rng = np.random.default_rng(seed)
    n_particles = max(1, int(spacepoints * (1 - noise_fraction) / 8.5))
    q = rng.choice([-1.0, 1.0], n_particles)
    pt = 0.5 + rng.exponential(1.5, n_particles)
    phi0 = rng.uniform(-math.pi, math.pi, n_particles)
    eta = rng.uniform(-1.2, 1.2, n_particles)
    z0 = rng.normal(0.0, 40.0, n_particles)
    big_r = pt / (0.3 * BFIELD) * 1000.0
    r_all, phi_all, z_all, pid_all, mod_all = [], [], [], [], []
    for layer, radius in enumerate(BARREL_RADII):
        ok = radius < 2 * big_r
        alpha = np.arcsin(np.clip(radius / (2 * big_r), 0, 1))
        phi = phi0 - q * alpha + rng.normal(0.0, 0.02 / radius, n_particles)
        z = z0 + 2 * big_r * alpha * np.sinh(eta)
        z = z + rng.normal(0.0, 0.05 if radius < 200 else 0.5, n_particles)
        ok &= np.abs(z) < HALF_LENGTH
        ok &= rng.uniform(size=n_particles) < 0.97  # inefficiency
        phi = (phi[ok] + math.pi) % (2 * math.pi) - math.pi
        r_all.append(np.full(ok.sum(), radius))
        phi_all.append(phi)
        z_all.append(z[ok])
        pid_all.append(np.flatnonzero(ok) + 1)
        mod_all.append(_module_id(layer, phi, z[ok], module_phi_mm, module_z_mm))
    n_hits = sum(len(p) for p in pid_all)
    n_noise = int(n_hits * noise_fraction / (1 - noise_fraction))
    layer = rng.integers(0, len(BARREL_RADII), n_noise)
    noise_r = np.asarray(BARREL_RADII)[layer]
    noise_phi = rng.uniform(-math.pi, math.pi, n_noise)
    noise_z = rng.uniform(-HALF_LENGTH, HALF_LENGTH, n_noise)
    noise_mod = np.zeros(n_noise, dtype=np.int64)
    for k in range(len(BARREL_RADII)):
        sel = layer == k
        noise_mod[sel] = _module_id(k, noise_phi[sel], noise_z[sel], module_phi_mm, module_z_mm)
    r = np.concatenate(r_all + [noise_r])
    phi = np.concatenate(phi_all + [noise_phi])
    z = np.concatenate(z_all + [noise_z])
    pid = np.concatenate(pid_all + [np.zeros(n_noise, dtype=np.int64)])
    mod = np.concatenate(mod_all + [noise_mod])
    perm = rng.permutation(len(r))
    r, phi, z, pid, mod = r[perm], phi[perm], z[perm], pid[perm], mod[perm]
    block = np.stack([r / 1000.0, phi / math.pi, z / 1000.0], axis=1)
    features = np.concatenate([block, block, block], axis=1).astype(np.float32)
    return {"features": features, "module_ids": mod.astype(np.int64), "particle_ids": pid}


def write_event(directory: Path, event_id: int, event: dict[str, np.ndarray]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / f"event{event_id:09d}"
    np.save(f"{prefix}-features.npy", event["features"])
    np.save(f"{prefix}-module_ids.npy", event["module_ids"])
    np.save(f"{prefix}-particle_ids.npy", event["particle_ids"])


# --- module map from synthetic truth -----------------------------------------------------


def build_module_map(
    events: list[dict[str, np.ndarray]], path: Path, margins=MARGINS["tiny"]
) -> int:
    """Rows for every module pair that a particle crosses consecutively (by radius), windows
    from the observed quantities (docs/DESIGN.md definitions) widened by a margin."""
    from exatrkx.reference import MODULE_MAP_COLUMNS, pair_quantities

    quantities = []
    for event in events:
        pid = event["particle_ids"]
        r = event["features"][:, 0]
        order = np.lexsort((r, pid))
        order = order[pid[order] > 0]
        same = pid[order][1:] == pid[order][:-1]
        p, q = order[:-1][same], order[1:][same]
        mods = event["module_ids"]
        values = pair_quantities(event["features"], p, q)
        quantities.append(np.column_stack([mods[p], mods[q], *values]))
    table = np.concatenate(quantities)
    keys, inverse = np.unique(table[:, :2].astype(np.int64), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse)
    lines = [",".join(MODULE_MAP_COLUMNS)]
    mins = np.full((len(keys), 4), np.inf)
    maxs = np.full((len(keys), 4), -np.inf)
    for k in range(4):
        np.minimum.at(mins[:, k], inverse, table[:, 2 + k])
        np.maximum.at(maxs[:, k], inverse, table[:, 2 + k])
    for row in range(len(keys)):
        values = []
        for k in range(4):
            values += [f"{mins[row, k] - margins[k]:.6g}", f"{maxs[row, k] + margins[k]:.6g}"]
        lines.append(f"{keys[row, 0]},{keys[row, 1]},{count[row]}," + ",".join(values))
    path.write_text("\n".join(lines) + "\n")
    return len(keys)


# --- model folder ------------------------------------------------------------------------

CONFIG_TEMPLATE = """name: "exatrkx"
backend: "exatrkx"
max_batch_size: 0
input [
  {{ name: "FEATURES" data_type: TYPE_FP32 dims: [ -1, -1 ] }},
  {{ name: "MODULE_ID" data_type: TYPE_INT64 dims: [ -1 ] optional: true }}
]
output [
  {{ name: "LABELS" data_type: TYPE_INT64 dims: [ -1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{parameters}
"""


def config_pbtxt(parameters: dict[str, str]) -> str:
    blocks = [
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in parameters.items()
    ]
    return CONFIG_TEMPLATE.format(parameters="\n".join(blocks))


def _cut_between(scores: np.ndarray, quantile: float) -> str:
    """A cut near `quantile` of `scores`, halfway between two neighbouring scores (so no score
    ties it), written as the shortest decimal of a float32."""
    s = np.unique(scores.astype(np.float32))
    k = int(np.clip(round(quantile * (len(s) - 1)), 0, len(s) - 2))
    cut = np.float32((np.float64(s[k]) + np.float64(s[k + 1])) / 2)
    return repr(float(cut)) if cut not in (s[k], s[k + 1]) else repr(float(s[k]))


def _radius_for_degree(embedding: np.ndarray, degree: int) -> float:
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(embedding).query(embedding, k=degree + 1)
    return float(f"{np.median(dist[:, -1]):.3g}")


def make_model_folder(out: Path, size: str = "tiny", seed: int = 0) -> dict[str, str]:
    """Write models, module map and config.pbtxt; return the pipeline parameters chosen."""
    from exatrkx import reference

    version = out / "1"
    version.mkdir(parents=True, exist_ok=True)
    for name, module in make_models(size, seed).items():
        save_scripted(module, version / name)
    spacepoints, map_events = (2000, 20) if size == "tiny" else (20000, 50)
    tuning = synthetic_event(spacepoints, seed=10_000 + seed, geometry=size)
    training = [
        synthetic_event(spacepoints, seed=20_000 + seed + k, geometry=size)
        for k in range(map_events)
    ]
    build_module_map(training, version / "module_map.csv", MARGINS[size])

    models = {name: torch.jit.load(str(version / name)).eval() for name in SIZES_FILES}
    x = torch.from_numpy(tuning["features"])
    with torch.no_grad():
        embedding = reference.embed(models["embed.pt"], x, 65536)
        radius = _radius_for_degree(embedding, 6)
        edges = reference.radius_graph(embedding, np.float32(radius), 32, tuning["features"])
        edge_index = torch.from_numpy(edges)
        filter_scores = reference.edge_scores(models["filter.pt"], x, edge_index, 16384)
        filter_cut = _cut_between(filter_scores.numpy(), 0.3)
        kept = torch.nonzero(filter_scores > float(filter_cut)).view(-1)
        gnn_scores = reference.edge_scores(models["gnn.pt"], x, edge_index[:, kept], None)
    gnn = gnn_scores.numpy()
    parameters = {
        "graph_construction": "radius",
        "radius": repr(radius),
        "knn": "32",
        "filter_cut": filter_cut,
        "gnn_cut": _cut_between(gnn, 0.3),
        "track_builder": "cc",
        "walk_min_cut": _cut_between(gnn, 0.5),
        "walk_high_cut": _cut_between(gnn, 0.85),
        "min_track_length": "3",
        "filter_chunk": "4096" if size == "tiny" else "16384",
    }
    (out / "config.pbtxt").write_text(config_pbtxt(parameters))
    return parameters


SIZES_FILES = ("embed.pt", "filter.pt", "gnn.pt")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exatrkx.fixtures", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="write a model folder (config.pbtxt, 1/*.pt, module map)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--size", choices=sorted(SIZES), default="tiny")
    m.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("events", help="write synthetic events as .npy files")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--spacepoints", type=int, required=True)
    e.add_argument("--count", type=int, default=1)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--first-id", type=int, default=1)
    e.add_argument(
        "--geometry",
        choices=sorted(GEOMETRY),
        default="bench",
        help="module size: match the model folder's --size (for the module map)",
    )
    args = parser.parse_args(argv)
    if args.command == "models":
        params = make_model_folder(args.out, args.size, args.seed)
        print(f"wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    else:
        for k in range(args.count):
            event = synthetic_event(args.spacepoints, seed=args.seed + k, geometry=args.geometry)
            write_event(args.out, args.first_id + k, event)
            print(f"event {args.first_id + k}: {len(event['features'])} spacepoints")


if __name__ == "__main__":
    main()
