"""Cost accounting: parameters and matrix-product FLOPs of each network for an event of N
spacepoints and E edges, and synthetic inputs of any size for benchmarks."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from exatrkx.models.networks import EmbeddingNet


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def synthetic_inputs(n: int, e: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features shaped like real ones (r/1000 in [0.03, 1.03], half of them strips; phi/pi in
    [-1, 1); z/1000 in [-3, 3]) and E random edges oriented by radius."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, 9)
    x[:, 0] = 0.03 + torch.rand(n, generator=g)
    x[:, 1] = 2 * torch.rand(n, generator=g) - 1
    x[:, 2] = 6 * torch.rand(n, generator=g) - 3
    x[:, 3:6] = x[:, :3]
    x[:, 6:9] = x[:, :3]
    if n == 0:
        return x, torch.zeros(2, e, dtype=torch.long)
    a = torch.randint(0, n, (e,), generator=g)
    b = torch.randint(0, n, (e,), generator=g)
    swap = x[a, 0] > x[b, 0]
    return x, torch.stack([torch.where(swap, b, a), torch.where(swap, a, b)])


def _count(net: nn.Module, n: int, e: int) -> int:
    x, edge_index = synthetic_inputs(n, e)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if isinstance(net, EmbeddingNet):
            net(x)
        else:
            net(x, edge_index)
    return counter.get_total_flops()


def matmul_flops(net: nn.Module, n: int, e: int) -> int:
    """Matrix-product FLOPs (a multiply-add counts 2) of one forward over N spacepoints and E
    edges. The networks are linear in N and E, so two small counted runs give the slopes.
    Element-wise work (LayerNorm, activations, gathers, sums) is not included."""
    n0, e0 = 512, 2048
    net = net.eval()
    per_node = _count(net, n0, 0) / n0
    per_edge = 0.0 if isinstance(net, EmbeddingNet) else (_count(net, n0, e0) - per_node * n0) / e0
    return int(round(per_node * n + per_edge * e))


def stage_costs(
    nets: dict[str, nn.Module], n: int, e_graph: int, e_filtered: int
) -> dict[str, dict[str, float]]:
    """Per stage: parameters and FLOPs for an event with `n` spacepoints, `e_graph` candidate
    edges (the filter's input) and `e_filtered` edges after the filter (the GNN's input)."""
    edges = {"embedding": 0, "filter": e_graph, "gnn": e_filtered}
    out = {}
    for stage, net in nets.items():
        flops = matmul_flops(net, n, edges[stage])
        out[stage] = {
            "parameters": count_parameters(net),
            "spacepoints": n,
            "edges": edges[stage],
            "gflops": flops / 1e9,
            # at this machine's measured fp32 / bf16 matrix-product peaks (REFERENCE.md)
            "ideal_seconds_fp32": flops / 0.34e12,
            "ideal_seconds_bf16": flops / 2.2e12,
        }
    return out


def format_costs(costs: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'stage':>10} {'params':>10} {'N':>8} {'E':>9} {'GFLOP':>8} {'fp32 s':>7} {'bf16 s':>7}"
    ]
    for stage, c in costs.items():
        lines.append(
            f"{stage:>10} {c['parameters']:>10} {c['spacepoints']:>8} {c['edges']:>9} "
            f"{c['gflops']:>8.2f} {c['ideal_seconds_fp32']:>7.3f} {c['ideal_seconds_bf16']:>7.3f}"
        )
    return "\n".join(lines)


__all__ = ["count_parameters", "synthetic_inputs", "matmul_flops", "stage_costs", "format_costs"]
