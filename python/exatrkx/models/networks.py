"""The networks of the pipeline, as plain `nn.Module`s with the interface of docs/DESIGN.md:

- `EmbeddingNet`: `x[N, 9] -> [N, D]`
- `FilterNet`, `InteractionGNN`, `HeteroInteractionGNN`: `(x[N, 9], edge_index[2, E]) -> [E]`
  logits

Each exports `num_features()` (and the embedding `embedding_dim()`) for the backend's load-time
check. Every forward casts its input to the dtype of its own weights and returns fp32, so a
module converted to bf16 by the backend still takes and gives fp32 tensors; doublet geometry is
computed in fp32 before that cast. The networks read derived inputs (`layers.node_inputs`:
phi as cos/sin, eta, cluster offsets), computed inside the module from the 9 columns.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from exatrkx.models.layers import (
    NUM_EDGE_GEOMETRY,
    NUM_NODE_INPUTS,
    NUM_SPACEPOINT_INPUTS,
    PairMLP,
    check_inputs,
    edge_chunks,
    make_mlp,
    node_inputs,
    pair_geometry,
    pair_geometry_eta,
    spacepoint_eta,
)

NUM_FEATURES = 9
# Strip spacepoints sit at r > 235 mm, pixels at r < 180 mm (TrackML geometry): the gap is wide,
# so a fixed radius separates them whatever the cluster columns hold.
STRIP_RADIUS = 0.2
# Edges per chunk at CPU inference: a few 32-wide fp32 temporaries fit in a core's L2 cache.
EDGE_CHUNK = 8192


class EmbeddingNet(nn.Module):
    """Metric-learning embedding: an MLP from the spacepoint inputs (`node_inputs`) to
    `emb_dim` dims, projected onto the unit sphere so that radii mean the same thing in every
    training."""

    def __init__(
        self,
        num_features: int = NUM_FEATURES,
        hidden: int = 128,
        layers: int = 4,
        emb_dim: int = 12,
        activation: str = "relu",
        layer_norm: bool = True,
        normalize: bool = True,
    ):
        super().__init__()
        self.mlp = make_mlp(
            [NUM_NODE_INPUTS] + [hidden] * layers + [emb_dim], activation, layer_norm
        )
        self.normalize = normalize
        self._num_features = num_features
        self._emb_dim = emb_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != self._num_features:
            raise ValueError(
                "x must be [N, " + str(self._num_features) + "], got " + str(list(x.shape))
            )
        out = self.mlp(node_inputs(x).to(self.mlp[0].weight.dtype)).float()
        if self.normalize:
            out = F.normalize(out, dim=1)
        return out

    @torch.jit.export
    def num_features(self) -> int:
        return self._num_features

    @torch.jit.export
    def embedding_dim(self) -> int:
        return self._emb_dim


class FilterNet(nn.Module):
    """Edge filter: an MLP over `[inputs(src), inputs(dst), doublet geometry]` -> one logit
    per edge. All its work is per edge (the two ends' rows are gathered first), so the
    pipeline may call it on chunks of edges without repeating anything per node."""

    def __init__(
        self,
        num_features: int = NUM_FEATURES,
        hidden: int = 64,
        layers: int = 3,
        activation: str = "relu",
        layer_norm: bool = True,
    ):
        super().__init__()
        width = 2 * NUM_NODE_INPUTS + NUM_EDGE_GEOMETRY
        self.mlp = make_mlp([width] + [hidden] * layers + [1], activation, layer_norm)
        self._num_features = num_features
        self.node_width = NUM_NODE_INPUTS
        self.edge_chunk = EDGE_CHUNK

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        check_inputs(x, edge_index, self._num_features)
        src, dst = edge_index[0], edge_index[1]
        if self.training:
            a = x.index_select(0, src).float()
            b = x.index_select(0, dst).float()
            h = torch.cat([node_inputs(a), node_inputs(b), pair_geometry(a, b)], 1)
            return self.mlp(h.to(self.mlp[0].weight.dtype)).squeeze(-1).float()
        # Inference: the first layer's blocks for the two ends are applied once per spacepoint
        # (the same function), and on the CPU the edges run in cache-sized chunks.
        first = self.mlp[0]
        dtype = first.weight.dtype
        k = self.node_width
        inputs = node_inputs(x).to(dtype)
        src_part = inputs.matmul(first.weight[:, :k].t())
        dst_part = inputs.matmul(first.weight[:, k : 2 * k].t())
        geometry_weight = first.weight[:, 2 * k :].t()
        position = x[:, :3].float()
        eta = spacepoint_eta(position)
        scores = torch.empty(src.size(0), dtype=torch.float32, device=x.device)
        for start, end in edge_chunks(src.size(0), self.edge_chunk, x.device):
            s, d = src[start:end], dst[start:end]
            geometry = pair_geometry_eta(
                position.index_select(0, s),
                position.index_select(0, d),
                eta.index_select(0, s),
                eta.index_select(0, d),
            )
            h = torch.addmm(first.bias, geometry.to(dtype), geometry_weight)
            h = h.add_(src_part.index_select(0, s)).add_(dst_part.index_select(0, d))
            for i, layer in enumerate(self.mlp):
                if i > 0:
                    h = layer(h)
            scores[start:end] = h.squeeze(-1).float()
        return scores

    @torch.jit.export
    def num_features(self) -> int:
        return self._num_features


def used_nodes(n: int, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The spacepoints that some edge touches, and the edges renumbered over them: message
    passing then skips the (many) spacepoints the filter left without edges."""
    used = torch.zeros(n, dtype=torch.bool, device=src.device)
    used.index_fill_(0, src, True).index_fill_(0, dst, True)
    nodes = torch.nonzero(used).squeeze(1)
    renumber = torch.zeros(n, dtype=torch.long, device=src.device)
    renumber.index_copy_(0, nodes, torch.arange(nodes.numel(), device=src.device))
    return nodes, renumber.index_select(0, src), renumber.index_select(0, dst)


def merge_rows(n: int, parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Rows `index` of the result come from `values`, for each (index, values) part."""
    first = parts[0][1]
    out = torch.zeros(n, first.size(1), dtype=first.dtype, device=first.device)
    for index, values in parts:
        out = out.index_copy(0, index, values.to(out.dtype))
    return out


class InteractionStep(nn.Module):
    """One message-passing iteration with residuals: edges from [h_src, h_dst, e], then nodes
    from [h, sum over incoming edges, sum over outgoing edges]."""

    def __init__(self, hidden: int, layers: int, activation: str, layer_norm: bool):
        super().__init__()
        sizes = [hidden] * layers
        self.edge_net = PairMLP(hidden, hidden, sizes, activation, layer_norm, True)
        self.node_net = make_mlp([3 * hidden] + sizes, activation, layer_norm, True)

    def update_nodes(self, m: Tensor, pixel: Tensor, strip: Tensor) -> Tensor:
        return self.node_net(m)

    def forward(
        self,
        h: Tensor,
        e: Tensor,
        src: Tensor,
        dst: Tensor,
        pixel: Tensor,
        strip: Tensor,
        chunks: list[tuple[int, int]],
    ) -> tuple[Tensor, Tensor]:
        shape = [h.size(0), e.size(1)]
        incoming = torch.zeros(shape, dtype=e.dtype, device=e.device)
        outgoing = torch.zeros(shape, dtype=e.dtype, device=e.device)
        if len(chunks) == 1:
            e = e + self.edge_net(h, e, src, dst)
            incoming.index_add_(0, dst, e)
            outgoing.index_add_(0, src, e)
        else:
            # inference on the CPU: update and aggregate chunk by chunk (the same function), in
            # place (e is this forward's own tensor, and the caller records no gradient)
            src_part = self.edge_net.src(h)
            dst_part = self.edge_net.dst(h)
            for start, end in chunks:
                s, d = src[start:end], dst[start:end]
                chunk = e[start:end]
                chunk.add_(self.edge_net.apply_edges(src_part, dst_part, chunk, s, d))
                incoming.index_add_(0, d, chunk)
                outgoing.index_add_(0, s, chunk)
        m = torch.cat([h, incoming.to(h.dtype), outgoing.to(h.dtype)], 1)
        h = h + self.update_nodes(m, pixel, strip)
        return h, e


class HeteroInteractionStep(InteractionStep):
    """An iteration whose node update has one network for pixel and one for strip spacepoints."""

    def __init__(self, hidden: int, layers: int, activation: str, layer_norm: bool):
        super().__init__(hidden, layers, activation, layer_norm)
        self.strip_node_net = make_mlp(
            [3 * hidden] + [hidden] * layers, activation, layer_norm, True
        )

    def update_nodes(self, m: Tensor, pixel: Tensor, strip: Tensor) -> Tensor:
        return merge_rows(
            m.size(0),
            [
                (pixel, self.node_net(m.index_select(0, pixel))),
                (strip, self.strip_node_net(m.index_select(0, strip))),
            ],
        )


class InteractionGNN(nn.Module):
    """Interaction-network edge classifier. Nodes: the spacepoint inputs (`node_columns` = 3)
    or those with the strip cluster offsets (9; zero for pixels); edges: both ends' inputs
    and the doublet geometry. Only spacepoints with an edge take part."""

    def __init__(
        self,
        num_features: int = NUM_FEATURES,
        hidden: int = 32,
        iterations: int = 4,
        layers: int = 2,
        node_columns: int = NUM_FEATURES,
        activation: str = "relu",
        layer_norm: bool = True,
    ):
        super().__init__()
        if node_columns not in (3, num_features):
            raise ValueError(f"node_columns must be 3 or {num_features}, got {node_columns}")
        self._num_features = num_features
        self.node_columns = node_columns
        self.strip_radius = STRIP_RADIUS
        width = NUM_NODE_INPUTS if node_columns > 3 else NUM_SPACEPOINT_INPUTS
        self.node_encoder = make_mlp([width] + [hidden] * layers, activation, layer_norm, True)
        edge_width = 2 * width + NUM_EDGE_GEOMETRY
        self.edge_encoder = make_mlp([edge_width] + [hidden] * layers, activation, layer_norm, True)
        self.steps = nn.ModuleList(
            [self.make_step(hidden, layers, activation, layer_norm) for _ in range(iterations)]
        )
        self.output = PairMLP(
            hidden, hidden, [hidden] * (layers - 1) + [1], activation, layer_norm, False
        )
        # edges per chunk of the per-edge networks at inference on the CPU (`edge_chunks`)
        self.edge_chunk = EDGE_CHUNK

    def make_step(self, hidden: int, layers: int, activation: str, layer_norm: bool):
        return InteractionStep(hidden, layers, activation, layer_norm)

    def dtype(self) -> torch.dtype:
        return self.output.edge.weight.dtype

    def encode(
        self, x: Tensor, src: Tensor, dst: Tensor, geometry: Tensor, pixel: Tensor, strip: Tensor
    ) -> tuple[Tensor, Tensor]:
        inputs = node_inputs(x, self.node_columns).to(geometry.dtype)
        h = self.node_encoder(inputs)
        e = self.edge_encoder(
            torch.cat([inputs.index_select(0, src), inputs.index_select(0, dst), geometry], 1)
        )
        return h, e

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        check_inputs(x, edge_index, self._num_features)
        nodes, src, dst = used_nodes(x.size(0), edge_index[0], edge_index[1])
        xf = x.index_select(0, nodes).float()
        position = xf[:, :3]
        eta = spacepoint_eta(position)
        geometry = pair_geometry_eta(
            position.index_select(0, src),
            position.index_select(0, dst),
            eta.index_select(0, src),
            eta.index_select(0, dst),
        )
        is_strip = xf[:, 0] > self.strip_radius
        strip = torch.nonzero(is_strip).squeeze(1)
        pixel = torch.nonzero(~is_strip).squeeze(1)
        dtype = self.dtype()
        h, e = self.encode(xf, src, dst, geometry.to(dtype), pixel, strip)
        chunks = [(0, src.size(0))]
        if not self.training and not e.requires_grad:
            # the chunked steps update e in place: only where autograd records nothing
            chunks = edge_chunks(src.size(0), self.edge_chunk, src.device)
        for step in self.steps:
            h, e = step(h, e, src, dst, pixel, strip, chunks)
        if len(chunks) == 1:
            return self.output(h, e, src, dst).squeeze(-1).float()
        src_part = self.output.src(h)
        dst_part = self.output.dst(h)
        scores = torch.empty(src.size(0), dtype=torch.float32, device=src.device)
        for start, end in chunks:
            out = self.output.apply_edges(
                src_part, dst_part, e[start:end], src[start:end], dst[start:end]
            )
            scores[start:end] = out.squeeze(-1).float()
        return scores

    @torch.jit.export
    def num_features(self) -> int:
        return self._num_features


class HeteroInteractionGNN(InteractionGNN):
    """The heterogeneous variant (seed talk): pixel spacepoints are encoded from their own
    position only, strip spacepoints also from both clusters (no padding reaches a
    network); edges get one encoder per type (pixel-pixel, pixel-strip, strip-strip) and
    every iteration updates pixel and strip nodes with separate networks."""

    def __init__(
        self,
        num_features: int = NUM_FEATURES,
        hidden: int = 32,
        iterations: int = 4,
        layers: int = 2,
        activation: str = "relu",
        layer_norm: bool = True,
    ):
        super().__init__(
            num_features, hidden, iterations, layers, num_features, activation, layer_norm
        )
        sizes = [hidden] * layers
        pix, full = NUM_SPACEPOINT_INPUTS, NUM_NODE_INPUTS
        self.pixel_inputs = pix
        self.pixel_encoder = make_mlp([pix] + sizes, activation, layer_norm, True)
        # the inherited edge_encoder serves strip-strip edges
        self.pixel_edge_encoder = make_mlp(
            [2 * pix + NUM_EDGE_GEOMETRY] + sizes, activation, layer_norm, True
        )
        mixed_width = pix + full + NUM_EDGE_GEOMETRY
        self.mixed_edge_encoder = make_mlp([mixed_width] + sizes, activation, layer_norm, True)

    def make_step(self, hidden: int, layers: int, activation: str, layer_norm: bool):
        return HeteroInteractionStep(hidden, layers, activation, layer_norm)

    def encode(
        self, x: Tensor, src: Tensor, dst: Tensor, geometry: Tensor, pixel: Tensor, strip: Tensor
    ) -> tuple[Tensor, Tensor]:
        inputs = node_inputs(x).to(geometry.dtype)
        pix = self.pixel_inputs
        h = merge_rows(
            x.size(0),
            [
                (pixel, self.pixel_encoder(inputs.index_select(0, pixel)[:, :pix])),
                (strip, self.node_encoder(inputs.index_select(0, strip))),
            ],
        )
        is_strip = torch.zeros(x.size(0), dtype=torch.bool, device=x.device).index_fill(
            0, strip, True
        )
        src_strip = is_strip.index_select(0, src)
        dst_strip = is_strip.index_select(0, dst)
        pp = torch.nonzero(~src_strip & ~dst_strip).squeeze(1)
        ss = torch.nonzero(src_strip & dst_strip).squeeze(1)
        ps = torch.nonzero(src_strip != dst_strip).squeeze(1)
        # a mixed edge may come in either orientation: take its pixel end and its strip end
        ps_src, ps_dst = src.index_select(0, ps), dst.index_select(0, ps)
        flip = src_strip.index_select(0, ps)
        pixel_end = torch.where(flip, ps_dst, ps_src)
        strip_end = torch.where(flip, ps_src, ps_dst)
        # per edge kind (0 pixel-pixel, 1 mixed, 2 strip-strip): its edges, their two ends,
        # and how many input columns each end contributes
        ends = [
            (pp, src.index_select(0, pp), dst.index_select(0, pp)),
            (ps, pixel_end, strip_end),
            (ss, src.index_select(0, ss), dst.index_select(0, ss)),
        ]
        columns = [(pix, pix), (pix, inputs.size(1)), (inputs.size(1), inputs.size(1))]
        if not self.training:
            return h, self.encode_edges(inputs, geometry, src.size(0), ends, columns)
        parts: list[tuple[Tensor, Tensor]] = []
        for kind, (ids, first_end, second_end) in enumerate(ends):
            first_cols, second_cols = columns[kind]
            edge_in = torch.cat(
                [
                    inputs.index_select(0, first_end)[:, :first_cols],
                    inputs.index_select(0, second_end)[:, :second_cols],
                    geometry.index_select(0, ids),
                ],
                1,
            )
            parts.append((ids, self.edge_encoder_layers(kind, edge_in, 0)))
        return h, merge_rows(src.size(0), parts)

    def edge_encoder_layers(self, kind: int, c: Tensor, first: int) -> Tensor:
        """Layers `first`, ... of the edge encoder of `kind` (0 pixel-pixel: the inherited
        `edge_encoder` serves strip-strip) on `c` (TorchScript cannot pick a module by value)."""
        if kind == 0:
            for i, layer in enumerate(self.pixel_edge_encoder):
                c = layer(c) if i >= first else c
        elif kind == 1:
            for i, layer in enumerate(self.mixed_edge_encoder):
                c = layer(c) if i >= first else c
        else:
            for i, layer in enumerate(self.edge_encoder):
                c = layer(c) if i >= first else c
        return c

    def encode_edges(
        self,
        inputs: Tensor,
        geometry: Tensor,
        num_edges: int,
        ends: list[tuple[Tensor, Tensor, Tensor]],
        columns: list[tuple[int, int]],
    ) -> Tensor:
        """Inference: the edge encoders of `encode`, their first layers' node blocks applied
        once per spacepoint and, on the CPU, the edges in cache-sized chunks. The same function
        as the concatenated inputs of training."""
        weights = [
            self.pixel_edge_encoder[0].weight,
            self.mixed_edge_encoder[0].weight,
            self.edge_encoder[0].weight,
        ]
        biases = [
            self.pixel_edge_encoder[0].bias,
            self.mixed_edge_encoder[0].bias,
            self.edge_encoder[0].bias,
        ]
        e = torch.empty(num_edges, weights[0].size(0), dtype=inputs.dtype, device=inputs.device)
        for kind, (ids, first_end, second_end) in enumerate(ends):
            weight, (first_cols, second_cols) = weights[kind], columns[kind]
            both = first_cols + second_cols
            first_part = inputs[:, :first_cols].matmul(weight[:, :first_cols].t())
            second_part = inputs[:, :second_cols].matmul(weight[:, first_cols:both].t())
            geometry_weight = weight[:, both:].t()
            for start, end in edge_chunks(ids.size(0), self.edge_chunk, inputs.device):
                rows = ids[start:end]
                c = torch.addmm(biases[kind], geometry.index_select(0, rows), geometry_weight)
                c = c.add_(first_part.index_select(0, first_end[start:end]))
                c = c.add_(second_part.index_select(0, second_end[start:end]))
                e.index_copy_(0, rows, self.edge_encoder_layers(kind, c, 1))
        return e


def build_gnn(model: str, **kwargs) -> InteractionGNN:
    """`plain` or `hetero` (the `--model` switch); kwargs go to the network."""
    if model == "plain":
        return InteractionGNN(**kwargs)
    if model == "hetero":
        kwargs.pop("node_columns", None)
        return HeteroInteractionGNN(**kwargs)
    raise ValueError(f"GNN model must be 'plain' or 'hetero', got {model!r}")


class TrackQualityNet(nn.Module):
    """Track-candidate classifier: the rows of `exatrkx.track_quality.track_features`,
    standardised by the training set's mean and spread (buffers, exported with the weights),
    through an MLP -> one logit per candidate (high: a real particle's track)."""

    def __init__(
        self,
        num_track_features: int = 18,
        hidden: int = 32,
        layers: int = 2,
        activation: str = "relu",
    ):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_track_features))
        self.register_buffer("scale", torch.ones(num_track_features))
        self.mlp = make_mlp([num_track_features] + [hidden] * layers + [1], activation, False)
        self._num_track_features = num_track_features

    def set_standardisation(self, rows: Tensor) -> None:
        self.mean.copy_(rows.mean(0))
        self.scale.copy_(rows.std(0).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != self._num_track_features:
            raise ValueError(f"track features must be [T, {self._num_track_features}]")
        return self.mlp((x.float() - self.mean) / self.scale).squeeze(-1)

    @torch.jit.export
    def num_track_features(self) -> int:
        return self._num_track_features
