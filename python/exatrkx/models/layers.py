"""Building blocks of the networks: MLPs, edge geometry and the pair MLP of the GNN.

Everything here compiles with `torch.jit.script`, so the exported files run in libtorch
without Python. Aggregations use `index_add` (no torch_geometric).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}

# dr, dphi, dz, deta, phi slope, z0 (see `edge_geometry`)
NUM_EDGE_GEOMETRY = 6


def _norm_act(width: int, activation: str, layer_norm: bool) -> list[nn.Module]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.LayerNorm(width)] if layer_norm else []
    return layers + [ACTIVATIONS[activation]()]


def make_mlp(
    sizes: list[int],
    activation: str = "relu",
    layer_norm: bool = True,
    output_activation: bool = False,
) -> nn.Sequential:
    """Linear layers `sizes[0] -> ... -> sizes[-1]`, each hidden one followed by LayerNorm and
    the activation; the last one too when `output_activation` (encoders, update networks)."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {sizes}")
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or output_activation:
            layers += _norm_act(sizes[i + 1], activation, layer_norm)
    return nn.Sequential(*layers)


def wrap_phi(d: Tensor) -> Tensor:
    """A difference of phi/pi columns wrapped into [-1, 1)."""
    return torch.remainder(d + 1.0, 2.0) - 1.0


# r, cos phi, sin phi, z, eta of the spacepoint
NUM_SPACEPOINT_INPUTS = 5
# ... and dr, dphi, dz of each strip cluster from the spacepoint
NUM_NODE_INPUTS = NUM_SPACEPOINT_INPUTS + 6
# offsets of the clusters from their spacepoint are a few mm in units of 1000 mm
CLUSTER_OFFSET_SCALE = 20.0


def node_inputs(x: Tensor, columns: int = 9) -> Tensor:
    """The network inputs of each spacepoint, fp32, from the feature columns (docs/DESIGN.md):
    r/1000, cos phi, sin phi, z/1000, eta (phi as a point on the circle, so the networks see
    no seam at phi = pi), and with `columns` = 9 the offsets (dr, wrapped dphi, dz, scaled)
    of both strip clusters from the spacepoint (zero for pixels, whose cluster columns copy
    the spacepoint's)."""
    x = x.float()
    r = x[:, 0]
    phi = x[:, 1] * 3.141592653589793
    z = x[:, 2]
    eta = torch.asinh(z / r.clamp_min(1e-6))
    parts = [torch.stack([r, torch.cos(phi), torch.sin(phi), z, eta], 1)]
    if columns > 3:
        for first in (3, 6):
            d = x[:, first : first + 3] - x[:, 0:3]
            dphi = wrap_phi(d[:, 1])
            offsets = torch.stack([d[:, 0], dphi, d[:, 2]], 1)
            parts.append(20.0 * offsets)  # CLUSTER_OFFSET_SCALE (TorchScript: literal)
    return torch.cat(parts, 1)


def pair_geometry(a: Tensor, b: Tensor) -> Tensor:
    """Per-edge doublet quantities from the gathered spacepoint columns (r/1000, phi/pi,
    z/1000) of the two ends: dr, dphi (wrapped, units of pi), dz, deta, dphi/dr and the z
    intercept at r = 0, scaled to order one for true edges. Computed in fp32 whatever the
    network precision: differences of nearby positions need the mantissa that bf16 lacks."""
    a = a[:, :3].float()
    b = b[:, :3].float()
    return pair_geometry_eta(a, b, spacepoint_eta(a), spacepoint_eta(b))


def spacepoint_eta(p: Tensor) -> Tensor:
    """Pseudorapidity from the (r/1000, phi/pi, z/1000) columns."""
    return torch.asinh(p[:, 2] / p[:, 0].clamp_min(1e-6))


def pair_geometry_eta(a: Tensor, b: Tensor, eta_a: Tensor, eta_b: Tensor) -> Tensor:
    """`pair_geometry` given the ends' fp32 (r, phi, z) columns and their `spacepoint_eta`:
    at inference eta is computed once per spacepoint and gathered, not twice per edge."""
    dr = b[:, 0] - a[:, 0]
    dphi = wrap_phi(b[:, 1] - a[:, 1])
    dz = b[:, 2] - a[:, 2]
    # hits on one layer have dr ~ 0: keep the ratios finite and bounded
    dr_safe = torch.where(dr >= 0, dr.clamp_min(1e-3), dr.clamp_max(-1e-3))
    phi_slope = (dphi / dr_safe).clamp(-5.0, 5.0)
    z0 = (a[:, 2] - a[:, 0] * dz / dr_safe).clamp(-1.0, 1.0)
    return torch.stack(
        [10.0 * dr, 10.0 * dphi, 10.0 * dz, 10.0 * (eta_b - eta_a), phi_slope, z0], dim=1
    )


def edge_geometry(x: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """`pair_geometry` of the edges (src, dst) of the spacepoints x."""
    p = x[:, :3].float()
    return pair_geometry(p.index_select(0, src), p.index_select(0, dst))


def check_inputs(x: Tensor, edge_index: Tensor, num_features: int) -> None:
    """Clear errors for the shapes the backend passes in."""
    if x.dim() != 2 or x.size(1) != num_features:
        raise ValueError(
            "x must be [N, " + str(num_features) + "], got " + str(list(x.shape)) + " instead"
        )
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError("edge_index must be [2, E], got " + str(list(edge_index.shape)))
    if edge_index.dtype != torch.long:
        raise ValueError("edge_index must be int64")


class PairMLP(nn.Module):
    """An MLP on `[h[src], h[dst], e]` whose first layer is split by input block: the node
    blocks are applied to the N node rows before the gather, so each edge gathers two
    `sizes[0]`-wide rows instead of concatenating wide inputs (the same function)."""

    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        sizes: list[int],
        activation: str = "relu",
        layer_norm: bool = True,
        output_activation: bool = True,
    ):
        super().__init__()
        self.src = nn.Linear(node_dim, sizes[0], bias=False)
        self.dst = nn.Linear(node_dim, sizes[0], bias=False)
        self.edge = nn.Linear(edge_dim, sizes[0])
        rest: list[nn.Module] = []
        if len(sizes) > 1 or output_activation:
            rest += _norm_act(sizes[0], activation, layer_norm)
        if len(sizes) > 1:
            rest += list(make_mlp(sizes, activation, layer_norm, output_activation))
        self.rest = nn.Sequential(*rest)

    def forward(self, h: Tensor, e: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        return self.apply_edges(self.src(h), self.dst(h), e, src, dst)

    def apply_edges(self, src_part: Tensor, dst_part: Tensor, e: Tensor, src: Tensor, dst: Tensor):
        """The MLP on the edges `src`, `dst`, `e` given the node blocks' products (`self.src(h)`,
        `self.dst(h)`): a chunk of edges can be run alone."""
        # in place on the fresh product (autograd-safe): fewer E x H temporaries
        c = self.edge(e)
        c = c.add_(src_part.index_select(0, src)).add_(dst_part.index_select(0, dst))
        return self.rest(c)


def edge_chunks(num_edges: int, chunk: int, device: torch.device) -> list[tuple[int, int]]:
    """`[start, end)` ranges for running per-edge networks in chunks at inference on the CPU:
    a chunk's E x H temporaries stay in cache, where the layer norms and activations over the
    whole graph (hundreds of MB each at pile-up 200) would stream from memory. One range (no
    chunking) on a GPU or when `chunk` <= 0."""
    if chunk <= 0 or device.type != "cpu" or num_edges <= chunk:
        return [(0, num_edges)]
    return [(s, min(s + chunk, num_edges)) for s in range(0, num_edges, chunk)]
