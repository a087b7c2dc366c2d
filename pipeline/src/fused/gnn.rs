//! The heterogeneous interaction network (`HeteroInteractionGNN`, python/exatrkx/models/
//! networks.py, two layers per MLP) on the CPU. Per edge, each network (encoder, the edge
//! update of every iteration, the output) runs as one fused pass with its activations in
//! registers; the sums over a spacepoint's edges are gathered per spacepoint from edge lists
//! sorted once (no scatter, no atomics); the node networks run per spacepoint. The edges are
//! processed grouped by kind (pixel-pixel, mixed, strip-strip: one encoder each) and the scores
//! returned in the caller's order.
use std::time::Instant;

use rayon::prelude::*;
use tracing::debug;

use super::simd::{self, Acc, Dense, Kernel, Lanes, Norm, Parameters};
use super::{
    in_tasks, FusedKernel, Spacepoints, EDGES_PER_TASK, GEOMETRY, NODES_PER_TASK, NODE_INPUTS,
    SPACEPOINT_INPUTS,
};
use crate::edges::Buckets;
use crate::error::Result;
use crate::model::TorchModel;

/// Spacepoints beyond this radius (r/1000) are strips (`STRIP_RADIUS`); the probe at load
/// covers both sides, so a file with another boundary is not fused.
const STRIP_RADIUS: f32 = 0.2;
/// Rows (edges or spacepoints) run together (`simd::accumulate`: three for width 32).
const TILE: usize = 3;
/// Edges ahead whose node rows are prefetched.
const PREFETCH: usize = 16;
/// Widest edge-encoder input: both ends' full inputs and the geometry.
const MAX_INPUT: usize = 2 * NODE_INPUTS + GEOMETRY;
/// Widest node state the node updates' input buffer ([h, incoming, outgoing]) holds.
const MAX_WIDTH: usize = 64;

/// Linear, LayerNorm, ReLU, Linear, LayerNorm, ReLU (`make_mlp` with two layers and
/// `output_activation`).
struct Mlp<const H: usize> {
    first: Dense<H>,
    first_norm: Norm<H>,
    second: Dense<H>,
    second_norm: Norm<H>,
}

/// A `PairMLP`: node blocks for both ends (no bias), the edge block with the bias, LayerNorm
/// and ReLU; then, in the iterations, Linear, LayerNorm, ReLU.
struct PairNet<const H: usize> {
    src: Dense<H>,
    dst: Dense<H>,
    edge: Dense<H>,
    norm: Norm<H>,
    rest: Option<(Dense<H>, Norm<H>)>,
}

struct Step<const H: usize> {
    edge_net: PairNet<H>,
    /// pixel and strip node updates on [h, incoming, outgoing]
    node_nets: [Mlp<H>; 2],
}

struct Net<const H: usize, const V: usize> {
    /// pixel (their first five inputs) and strip spacepoints
    node_encoders: [Mlp<H>; 2],
    /// pixel-pixel, mixed (pixel end first), strip-strip edges
    edge_encoders: [Mlp<H>; 3],
    steps: Vec<Step<H>>,
    output: PairNet<H>,
    out_weight: [f32; H],
    out_bias: f32,
}

pub struct FusedGnn {
    net: Box<Net<32, 4>>,
}

impl<const H: usize> Mlp<H> {
    fn from_parameters(params: &Parameters, name: &str, inputs: usize) -> Option<Self> {
        Some(Self {
            first: params.dense(&format!("{name}.0"), inputs, true)?,
            first_norm: params.norm(&format!("{name}.1"))?,
            second: params.dense(&format!("{name}.3"), H, true)?,
            second_norm: params.norm(&format!("{name}.4"))?,
        })
    }

    /// The MLP on a tile of rows; `buffer` holds the hidden layer.
    #[inline(always)]
    fn apply<L: Lanes, const V: usize>(
        &self,
        x: [&[f32]; TILE],
        buffer: &mut [[f32; H]; TILE],
    ) -> [Acc<L, V>; TILE] {
        let acc = simd::dense::<L, H, V, TILE>(&self.first, x);
        for t in 0..TILE {
            simd::store_row(&simd::norm_relu(&acc[t], &self.first_norm), &mut buffer[t]);
        }
        let mut acc =
            simd::dense::<L, H, V, TILE>(&self.second, std::array::from_fn(|t| &buffer[t][..]));
        for t in 0..TILE {
            acc[t] = simd::norm_relu(&acc[t], &self.second_norm);
        }
        acc
    }
}

impl<const H: usize> PairNet<H> {
    fn from_parameters(params: &Parameters, name: &str, rest: bool) -> Option<Self> {
        Some(Self {
            src: params.dense(&format!("{name}.src"), H, false)?,
            dst: params.dense(&format!("{name}.dst"), H, false)?,
            edge: params.dense(&format!("{name}.edge"), H, true)?,
            norm: params.norm(&format!("{name}.rest.0"))?,
            rest: if rest {
                Some((
                    params.dense(&format!("{name}.rest.2"), H, true)?,
                    params.norm(&format!("{name}.rest.3"))?,
                ))
            } else {
                None
            },
        })
    }

    /// `[N][H]` products of the node rows with the source and destination blocks.
    fn node_parts<const V: usize>(&self, h: &[[f32; H]], avx2: bool) -> [Vec<[f32; H]>; 2] {
        [&self.src, &self.dst].map(|dense| super::row_products::<_, H, V, TILE>(dense, h, avx2))
    }

    /// The first layer and its norm for a tile of edges.
    #[inline(always)]
    fn first<L: Lanes, const V: usize>(
        &self,
        parts: &[Vec<[f32; H]>; 2],
        e: [&[f32]; TILE],
        src: [u32; TILE],
        dst: [u32; TILE],
    ) -> [Acc<L, V>; TILE] {
        let mut acc = simd::dense::<L, H, V, TILE>(&self.edge, e);
        for t in 0..TILE {
            simd::add_row(&mut acc[t], &parts[0][src[t] as usize]);
            simd::add_row(&mut acc[t], &parts[1][dst[t] as usize]);
            acc[t] = simd::norm_relu(&acc[t], &self.norm);
        }
        acc
    }
}

/// The event's graph over the spacepoints that have an edge, its edges grouped by kind.
struct Graph {
    /// per used spacepoint: strip (r above `STRIP_RADIUS`)
    is_strip: Vec<bool>,
    /// used spacepoints of each kind
    kinds: [Vec<u32>; 2],
    /// edges in processing order: their index in the caller's order, ends, kind boundaries
    order: Vec<u32>,
    src: Vec<u32>,
    dst: Vec<u32>,
    /// `order` positions where the mixed and the strip-strip edges start
    bounds: [usize; 2],
    /// per used spacepoint, the processing positions of its incoming / outgoing edges
    incoming: Adjacency,
    outgoing: Adjacency,
}

/// Edge positions grouped by spacepoint (CSR), ascending within each.
type Adjacency = Buckets<u32>;

/// The positions of the edges at each end in `ends`.
fn adjacency(n: usize, ends: &[u32]) -> Adjacency {
    Buckets::new(n, ends.iter().enumerate().map(|(k, &i)| (i, k as u32)))
}

impl Graph {
    /// `nodes`: the used spacepoints (ascending), `src`/`dst` renumbered over them.
    fn new(sp: &Spacepoints, src: &[u32], dst: &[u32]) -> Self {
        let is_strip: Vec<bool> = sp.position.iter().map(|p| p[0] > STRIP_RADIUS).collect();
        let kinds = [false, true].map(|strip| {
            (0..is_strip.len() as u32)
                .filter(|&i| is_strip[i as usize] == strip)
                .collect()
        });
        // edges by kind (0 pixel-pixel, 1 mixed, 2 strip-strip), in their order within a kind
        let kind: Vec<u8> = src
            .par_iter()
            .zip(dst)
            .map(|(&a, &b)| is_strip[a as usize] as u8 + is_strip[b as usize] as u8)
            .collect();
        let mut per_kind = [0usize; 3];
        for &c in &kind {
            per_kind[c as usize] += 1;
        }
        let bounds = [per_kind[0], per_kind[0] + per_kind[1]];
        let mut next = [0, bounds[0], bounds[1]];
        let mut order = vec![0u32; src.len()];
        for (k, &c) in kind.iter().enumerate() {
            order[next[c as usize]] = k as u32;
            next[c as usize] += 1;
        }
        let src: Vec<u32> = order.iter().map(|&k| src[k as usize]).collect();
        let dst: Vec<u32> = order.iter().map(|&k| dst[k as usize]).collect();
        let n = is_strip.len();
        Self {
            incoming: adjacency(n, &dst),
            outgoing: adjacency(n, &src),
            is_strip,
            kinds,
            order,
            src,
            dst,
            bounds,
        }
    }
}

impl<const H: usize, const V: usize> Net<H, V> {
    fn from_parameters(params: &Parameters) -> Option<Self> {
        let pix = SPACEPOINT_INPUTS;
        let mut steps = Vec::new();
        while let Some(edge_net) =
            PairNet::from_parameters(params, &format!("steps.{}.edge_net", steps.len()), true)
        {
            let name = |net: &str| format!("steps.{}.{net}", steps.len());
            let node_nets = [
                Mlp::from_parameters(params, &name("node_net"), 3 * H)?,
                Mlp::from_parameters(params, &name("strip_node_net"), 3 * H)?,
            ];
            steps.push(Step {
                edge_net,
                node_nets,
            });
        }
        let out_weight = params.get("output.rest.2.weight", &[1, H as i64])?;
        let out_bias = params.get("output.rest.2.bias", &[1])?[0];
        let net = Self {
            node_encoders: [
                Mlp::from_parameters(params, "pixel_encoder", pix)?,
                Mlp::from_parameters(params, "node_encoder", NODE_INPUTS)?,
            ],
            edge_encoders: [
                Mlp::from_parameters(params, "pixel_edge_encoder", 2 * pix + GEOMETRY)?,
                Mlp::from_parameters(params, "mixed_edge_encoder", pix + NODE_INPUTS + GEOMETRY)?,
                Mlp::from_parameters(params, "edge_encoder", 2 * NODE_INPUTS + GEOMETRY)?,
            ],
            output: PairNet::from_parameters(params, "output", false)?,
            out_weight: std::array::from_fn(|j| out_weight[j]),
            out_bias,
            steps,
        };
        // every parameter accounted for: 5 encoders of 8, 26 per iteration, 8 for the output
        (!net.steps.is_empty() && params.len() == 48 + 26 * net.steps.len()).then_some(net)
    }

    fn logits(&self, sp: &Spacepoints, src: &[u32], dst: &[u32], avx2: bool) -> Vec<f32> {
        // milliseconds per part (the debug log): graph, encoders, edge updates, edge sums,
        // node updates, output
        let mut ms = [0f64; 6];
        let mut clock = Instant::now();
        let mut lap = |part: usize| {
            ms[part] += clock.elapsed().as_secs_f64() * 1e3;
            clock = Instant::now();
        };
        let graph = Graph::new(sp, src, dst);
        lap(0);
        let mut h = self.encode_nodes(sp, &graph, avx2);
        let mut e = vec![[0f32; H]; graph.src.len()];
        in_tasks(&mut e, EDGES_PER_TASK, |from, e| {
            let task = EncodeEdges {
                net: self,
                sp,
                graph: &graph,
                from,
                e,
            };
            simd::dispatch(task, avx2)
        });
        let mut incoming = vec![[0f32; H]; h.len()];
        let mut outgoing = vec![[0f32; H]; h.len()];
        lap(1);
        for step in &self.steps {
            let parts = step.edge_net.node_parts::<V>(&h, avx2);
            in_tasks(&mut e, EDGES_PER_TASK, |from, e| {
                let task = UpdateEdges::<H, V> {
                    net: &step.edge_net,
                    parts: &parts,
                    src: &graph.src[from..],
                    dst: &graph.dst[from..],
                    e,
                };
                simd::dispatch(task, avx2)
            });
            lap(2);
            for (sums, adjacency) in [
                (&mut incoming, &graph.incoming),
                (&mut outgoing, &graph.outgoing),
            ] {
                let n = sums.len();
                sums.par_iter_mut().enumerate().for_each(|(node, sum)| {
                    if node + 2 < n {
                        for &k in adjacency.of(node + 2) {
                            simd::prefetch(&e[k as usize]);
                        }
                    }
                    *sum = [0.0; H];
                    for &k in adjacency.of(node) {
                        for j in 0..H {
                            sum[j] += e[k as usize][j];
                        }
                    }
                });
            }
            lap(3);
            for (kind, nodes) in graph.kinds.iter().enumerate() {
                let net = &step.node_nets[kind];
                let sums = [&h, &incoming, &outgoing];
                let updates = per_node(nodes, |nodes, out| {
                    simd::dispatch(
                        UpdateNodes::<H, V> {
                            net,
                            sums,
                            nodes,
                            out,
                        },
                        avx2,
                    )
                });
                for (&node, update) in nodes.iter().zip(&updates) {
                    for j in 0..H {
                        h[node as usize][j] += update[j];
                    }
                }
            }
            lap(4);
        }
        let parts = self.output.node_parts::<V>(&h, avx2);
        let mut out = vec![0f32; e.len()];
        in_tasks(&mut out, EDGES_PER_TASK, |from, out| {
            let task = Output::<H, V> {
                net: self,
                parts: &parts,
                graph: &graph,
                e: &e,
                from,
                out,
            };
            simd::dispatch(task, avx2)
        });
        let mut logits = vec![0f32; out.len()];
        for (&k, &v) in graph.order.iter().zip(&out) {
            logits[k as usize] = v;
        }
        lap(5);
        debug!(
            graph_ms = ms[0],
            encoders_ms = ms[1],
            edge_updates_ms = ms[2],
            edge_sums_ms = ms[3],
            node_updates_ms = ms[4],
            output_ms = ms[5],
            "fused GNN parts"
        );
        logits
    }

    fn encode_nodes(&self, sp: &Spacepoints, graph: &Graph, avx2: bool) -> Vec<[f32; H]> {
        let mut h = vec![[0f32; H]; sp.position.len()];
        for (kind, nodes) in graph.kinds.iter().enumerate() {
            let net = &self.node_encoders[kind];
            let width = [SPACEPOINT_INPUTS, NODE_INPUTS][kind];
            let encoded = per_node(nodes, |nodes, out| {
                let task = EncodeNodes::<H, V> {
                    net,
                    sp,
                    width,
                    nodes,
                    out,
                };
                simd::dispatch(task, avx2)
            });
            for (&node, row) in nodes.iter().zip(&encoded) {
                h[node as usize] = *row;
            }
        }
        h
    }
}

/// The rows `run(nodes, out)` writes for `nodes` (in their order), over rayon tasks.
fn per_node<const H: usize>(
    nodes: &[u32],
    run: impl Fn(&[u32], &mut [[f32; H]]) + Sync,
) -> Vec<[f32; H]> {
    let mut out = vec![[0f32; H]; nodes.len()];
    in_tasks(&mut out, NODES_PER_TASK, |from, out| {
        run(&nodes[from..from + out.len()], out)
    });
    out
}

/// Prefetch the node rows of the edges `from..from + TILE` (those below `len`).
#[inline(always)]
fn prefetch_ends<const H: usize>(
    parts: &[Vec<[f32; H]>; 2],
    src: &[u32],
    dst: &[u32],
    from: usize,
    len: usize,
) {
    for k in from..(from + TILE).min(len) {
        simd::prefetch(&parts[0][src[k] as usize]);
        simd::prefetch(&parts[1][dst[k] as usize]);
    }
}

/// Tiles of `TILE` positions over `0..len`, the last one padded with its last position.
#[inline(always)]
fn tiles(len: usize) -> impl Iterator<Item = (usize, usize, [usize; TILE])> {
    (0..len).step_by(TILE).map(move |start| {
        let count = TILE.min(len - start);
        (
            start,
            count,
            std::array::from_fn(|t| start + t.min(count - 1)),
        )
    })
}

struct EncodeNodes<'a, const H: usize, const V: usize> {
    net: &'a Mlp<H>,
    sp: &'a Spacepoints,
    width: usize,
    nodes: &'a [u32],
    out: &'a mut [[f32; H]],
}

impl<const H: usize, const V: usize> Kernel for EncodeNodes<'_, H, V> {
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let mut buffer = [[0f32; H]; TILE];
        for (start, count, at) in tiles(self.nodes.len()) {
            let x = at.map(|i| &self.sp.inputs[self.nodes[i] as usize][..self.width]);
            let acc = self.net.apply::<L, V>(x, &mut buffer);
            for t in 0..count {
                simd::store_row(&acc[t], &mut self.out[start + t]);
            }
        }
    }
}

struct EncodeEdges<'a, const H: usize, const V: usize> {
    net: &'a Net<H, V>,
    sp: &'a Spacepoints,
    graph: &'a Graph,
    /// processing position of `e[0]`
    from: usize,
    e: &'a mut [[f32; H]],
}

impl<const H: usize, const V: usize> Kernel for EncodeEdges<'_, H, V> {
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let g = self.graph;
        let mut inputs = [[0f32; MAX_INPUT]; TILE];
        let mut buffer = [[0f32; H]; TILE];
        let mut start = 0;
        while start < self.e.len() {
            let position = self.from + start;
            let kind = g.bounds.iter().filter(|&&b| b <= position).count();
            let kind_end = g.bounds.get(kind).copied().unwrap_or(usize::MAX);
            let count = TILE.min(self.e.len() - start).min(kind_end - position);
            let mut width = 0;
            if let Some(k) = (position + PREFETCH < g.src.len()).then_some(position + PREFETCH) {
                for node in [g.src[k], g.dst[k]] {
                    simd::prefetch(&self.sp.inputs[node as usize]);
                    simd::prefetch(&self.sp.position[node as usize]);
                }
            }
            for t in 0..TILE {
                let k = position + t.min(count - 1);
                let (a, b) = (g.src[k] as usize, g.dst[k] as usize);
                let geometry = self.sp.edge_geometry(a, b);
                // mixed edges read their pixel end first
                let (first, second) = if kind == 1 && g.is_strip[a] {
                    (b, a)
                } else {
                    (a, b)
                };
                let cols = [
                    (SPACEPOINT_INPUTS, SPACEPOINT_INPUTS),
                    (SPACEPOINT_INPUTS, NODE_INPUTS),
                    (NODE_INPUTS, NODE_INPUTS),
                ][kind];
                let row = &mut inputs[t];
                row[..cols.0].copy_from_slice(&self.sp.inputs[first][..cols.0]);
                row[cols.0..cols.0 + cols.1].copy_from_slice(&self.sp.inputs[second][..cols.1]);
                width = cols.0 + cols.1 + GEOMETRY;
                row[cols.0 + cols.1..width].copy_from_slice(&geometry);
            }
            let x = std::array::from_fn(|t| &inputs[t][..width]);
            let acc = self.net.edge_encoders[kind].apply::<L, V>(x, &mut buffer);
            for t in 0..count {
                simd::store_row(&acc[t], &mut self.e[start + t]);
            }
            start += count;
        }
    }
}

/// e += edge_net(h, e) for one task's edges.
struct UpdateEdges<'a, const H: usize, const V: usize> {
    net: &'a PairNet<H>,
    parts: &'a [Vec<[f32; H]>; 2],
    /// ends from the task's first edge on
    src: &'a [u32],
    dst: &'a [u32],
    e: &'a mut [[f32; H]],
}

impl<const H: usize, const V: usize> Kernel for UpdateEdges<'_, H, V> {
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let Some((second, second_norm)) = &self.net.rest else {
            return;
        };
        let mut buffer = [[0f32; H]; TILE];
        for (start, count, at) in tiles(self.e.len()) {
            prefetch_ends(
                self.parts,
                self.src,
                self.dst,
                start + PREFETCH,
                self.e.len(),
            );
            let x = at.map(|i| &self.e[i][..]);
            let acc = self.net.first::<L, V>(
                self.parts,
                x,
                at.map(|i| self.src[i]),
                at.map(|i| self.dst[i]),
            );
            for t in 0..TILE {
                simd::store_row(&acc[t], &mut buffer[t]);
            }
            let acc = simd::dense::<L, H, V, TILE>(second, std::array::from_fn(|t| &buffer[t][..]));
            for t in 0..count {
                let mut update = simd::norm_relu(&acc[t], second_norm);
                simd::add_row(&mut update, &self.e[start + t]);
                simd::store_row(&update, &mut self.e[start + t]);
            }
        }
    }
}

/// The node update of one kind: [h, incoming, outgoing] -> the residual, per node.
struct UpdateNodes<'a, const H: usize, const V: usize> {
    net: &'a Mlp<H>,
    sums: [&'a Vec<[f32; H]>; 3],
    nodes: &'a [u32],
    out: &'a mut [[f32; H]],
}

impl<const H: usize, const V: usize> Kernel for UpdateNodes<'_, H, V> {
    #[inline(always)]
    fn run<L: Lanes>(self) {
        assert!(H <= MAX_WIDTH);
        let mut inputs = [[0f32; 3 * MAX_WIDTH]; TILE];
        let mut buffer = [[0f32; H]; TILE];
        for (start, count, at) in tiles(self.nodes.len()) {
            for t in 0..TILE {
                let node = self.nodes[at[t]] as usize;
                for (part, sums) in self.sums.iter().enumerate() {
                    inputs[t][part * H..(part + 1) * H].copy_from_slice(&sums[node]);
                }
            }
            let x = std::array::from_fn(|t| &inputs[t][..3 * H]);
            let acc = self.net.apply::<L, V>(x, &mut buffer);
            for t in 0..count {
                simd::store_row(&acc[t], &mut self.out[start + t]);
            }
        }
    }
}

struct Output<'a, const H: usize, const V: usize> {
    net: &'a Net<H, V>,
    parts: &'a [Vec<[f32; H]>; 2],
    graph: &'a Graph,
    e: &'a [[f32; H]],
    from: usize,
    out: &'a mut [f32],
}

impl<const H: usize, const V: usize> Kernel for Output<'_, H, V> {
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let g = self.graph;
        let (src, dst) = (&g.src[self.from..], &g.dst[self.from..]);
        for (start, count, at) in tiles(self.out.len()) {
            prefetch_ends(self.parts, src, dst, start + PREFETCH, self.out.len());
            let at = at.map(|i| self.from + i);
            let x = at.map(|k| &self.e[k][..]);
            let acc = self.net.output.first::<L, V>(
                self.parts,
                x,
                at.map(|k| g.src[k]),
                at.map(|k| g.dst[k]),
            );
            for t in 0..count {
                self.out[start + t] = simd::dot(&acc[t], &self.net.out_weight) + self.net.out_bias;
            }
        }
    }
}

impl FusedGnn {
    /// The fused GNN for the TorchScript GNN `model`, or `None` when its parameters are not a
    /// two-layer HeteroInteractionGNN's of width 32 or its logits on the probe event differ
    /// from the file's.
    pub(crate) fn load(model: &TorchModel, num_features: usize) -> Result<Option<Self>> {
        if num_features != 9 {
            return Ok(None);
        }
        let params = super::parameters(model, "gnn")?;
        let Some(net) = Net::from_parameters(&params) else {
            return Ok(None);
        };
        Self { net: Box::new(net) }.checked(model, "gnn")
    }
}

impl FusedKernel for FusedGnn {
    fn logits_with(
        &self,
        features: &[f32],
        num_features: usize,
        src: &[i64],
        dst: &[i64],
        portable: bool,
    ) -> Vec<f32> {
        let n = features.len() / num_features;
        // the spacepoints with an edge, ascending, and the edges renumbered over them
        let mut renumber = vec![u32::MAX; n];
        for &i in src.iter().chain(dst) {
            renumber[i as usize] = 0;
        }
        let mut nodes = Vec::new();
        for (i, slot) in renumber.iter_mut().enumerate() {
            if *slot == 0 {
                *slot = nodes.len() as u32;
                nodes.push(i as u32);
            }
        }
        let src: Vec<u32> = src.iter().map(|&i| renumber[i as usize]).collect();
        let dst: Vec<u32> = dst.iter().map(|&i| renumber[i as usize]).collect();
        let sp = Spacepoints::new(features, num_features, Some(&nodes));
        let avx2 = !portable && simd::have_avx2();
        self.net.logits(&sp, &src, &dst, avx2)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::stage::ExecutionContext;

    #[test]
    fn portable_and_vector_kernels_agree_with_the_file() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../model_repository/exatrkx/1/gnn.pt");
        let model = TorchModel::load(&path, &ExecutionContext::cpu()).unwrap();
        let fused = FusedGnn::load(&model, 9)
            .unwrap()
            .expect("the served GNN is fused");
        super::super::assert_matches_file(&fused, &model, "gnn");

        // only pixel or only strip spacepoints (one edge kind, one node kind), one edge
        let (features, src, dst) = super::super::probe_event();
        for (scale, shift) in [(0.15f32, 0.02f32), (0.7, 0.25)] {
            let mut moved = features.clone();
            for row in moved.chunks_exact_mut(9) {
                for c in [0, 3, 6] {
                    row[c] = shift + scale * (row[c] - 0.03);
                }
            }
            let is_strip = |i: i64| moved[i as usize * 9] > STRIP_RADIUS;
            assert!(src.iter().all(|&i| is_strip(i) == (shift > 0.2)));
            super::super::assert_matches_file_on(&fused, &model, "gnn", &moved, &src, &dst);
        }
        super::super::assert_matches_file_on(&fused, &model, "gnn", &features, &[4], &[9]);
    }
}
