//! The filter network on the CPU in one fused pass per pair of edges. libtorch runs the
//! filter op by op over chunks of edges and spends most of its time writing and re-reading
//! `[E, H]` activations between them (layer norms, adds, gathers: 70% against 30% in matrix
//! products, MODEL_CARD.md); here each edge's activations stay in registers from its doublet
//! geometry to its logit. The first layer's spacepoint blocks are computed once per spacepoint,
//! as the TorchScript file does.
//!
//! It reads the weights of a `FilterNet` (python/exatrkx/models/networks.py: Linear over both
//! ends' inputs and the doublet geometry, then Linear / LayerNorm / ReLU blocks, one logit) and
//! is used only when the file's logits on a probe event agree with its own (`load`), so a
//! network of another shape keeps running through libtorch.
// The kernels' loops index several arrays (lanes, registers, tiles) at once.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};
use tracing::{debug, warn};

use crate::error::{PipelineError, Result};
use crate::model::TorchModel;
use crate::stage::torch_error;

/// r, cos phi, sin phi, z, eta, then dr, dphi, dz of both strip clusters (`node_inputs`).
const NODE_INPUTS: usize = 11;
/// dr, dphi, dz, deta, phi slope, z0 (`pair_geometry`).
const GEOMETRY: usize = 6;
const LAYER_NORM_EPS: f32 = 1e-5;
/// Edges scored together: their accumulators (2 x H/8 AVX registers) stay in registers.
const TILE: usize = 2;
/// f32 lanes of an AVX register.
const LANES: usize = 8;
/// Edges per rayon task.
const EDGES_PER_TASK: usize = 4096;
/// Largest logit difference from the TorchScript file accepted on the probe event (float
/// rounding of a different summation order is about 1e-5).
const PROBE_TOLERANCE: f32 = 1e-3;

/// One hidden block: Linear (weights by input row) then LayerNorm and ReLU.
struct Block<const H: usize> {
    weight: Vec<[f32; H]>,
    bias: [f32; H],
    gamma: [f32; H],
    beta: [f32; H],
}

struct Net<const H: usize, const V: usize> {
    /// First layer: source and destination spacepoint blocks `[NODE_INPUTS][H]`, geometry.
    ends: [Vec<[f32; H]>; 2],
    geometry: [[f32; H]; GEOMETRY],
    first_bias: [f32; H],
    first_norm: ([f32; H], [f32; H]),
    blocks: Vec<Block<H>>,
    out_weight: [f32; H],
    out_bias: f32,
}

/// The filter's weights for the widths compiled here.
enum Widths {
    H32(Box<Net<32, 4>>),
    H48(Box<Net<48, 6>>),
    H64(Box<Net<64, 8>>),
}

pub struct FusedFilter {
    net: Widths,
}

/// `torch.remainder(d + 1, 2) - 1`: a phi/pi difference wrapped into [-1, 1).
#[inline(always)]
fn wrap_phi(d: f32) -> f32 {
    let a = d + 1.0;
    a - 2.0 * (a / 2.0).floor() - 1.0
}

/// Sum of `f(j)` over `0..H` in eight interleaved lanes: a serial f32 sum cannot be
/// vectorised (its order is fixed) and would chain H dependent additions.
#[inline(always)]
fn lane_sum<const H: usize>(f: impl Fn(usize) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    for j in 0..H {
        lanes[j % LANES] += f(j);
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// LayerNorm (biased variance) then ReLU, in place.
#[inline(always)]
fn norm_relu<const H: usize>(h: &mut [f32; H], gamma: &[f32; H], beta: &[f32; H]) {
    let mean = lane_sum::<H>(|j| h[j]) / H as f32;
    let var = lane_sum::<H>(|j| (h[j] - mean) * (h[j] - mean)) / H as f32;
    let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
    for j in 0..H {
        h[j] = ((h[j] - mean) * inv * gamma[j] + beta[j]).max(0.0);
    }
}

/// Per spacepoint: r/1000, phi/pi, z/1000 and eta (f32 as in the TorchScript).
struct Spacepoints {
    position: Vec<[f32; 3]>,
    eta: Vec<f32>,
}

impl Spacepoints {
    /// `pair_geometry_eta` of the edge a -> b: dr, dphi, dz, deta (scaled by 10), phi slope
    /// and z0, the last two clamped.
    #[inline(always)]
    fn edge_geometry(&self, a: usize, b: usize) -> [f32; GEOMETRY] {
        let (pa, pb) = (&self.position[a], &self.position[b]);
        let dr = pb[0] - pa[0];
        let dphi = wrap_phi(pb[1] - pa[1]);
        let dz = pb[2] - pa[2];
        // hits on one layer have dr ~ 0: keep the ratios finite and bounded
        let dr_safe = if dr >= 0.0 {
            dr.max(1e-3)
        } else {
            dr.min(-1e-3)
        };
        [
            10.0 * dr,
            10.0 * dphi,
            10.0 * dz,
            10.0 * (self.eta[b] - self.eta[a]),
            (dphi / dr_safe).clamp(-5.0, 5.0),
            (pa[2] - pa[0] * dz / dr_safe).clamp(-1.0, 1.0),
        ]
    }
}

fn spacepoint_eta(p: &[f32; 3]) -> f32 {
    (p[2] / p[0].max(1e-6)).asinh()
}

/// The network inputs of one spacepoint (`node_inputs` with 9 feature columns).
fn node_inputs(row: &[f32]) -> [f32; NODE_INPUTS] {
    let phi = row[1] * std::f32::consts::PI;
    let mut out = [0f32; NODE_INPUTS];
    out[..5].copy_from_slice(&[
        row[0],
        phi.cos(),
        phi.sin(),
        row[2],
        spacepoint_eta(&[row[0], row[1], row[2]]),
    ]);
    for (k, first) in [3usize, 6].into_iter().enumerate() {
        let d: [f32; 3] = std::array::from_fn(|c| row[first + c] - row[c]);
        let o = 5 + 3 * k;
        out[o] = 20.0 * d[0];
        out[o + 1] = 20.0 * wrap_phi(d[1]);
        out[o + 2] = 20.0 * d[2];
    }
    out
}

impl<const H: usize, const V: usize> Net<H, V> {
    /// Weights from `(name, tensor)` pairs of a FilterNet: `mlp.0` the first Linear, then
    /// `mlp.{1,4,7,..}` LayerNorms and `mlp.{3,6,..}` Linears, the last Linear to one logit.
    fn from_parameters(params: &[(String, Vec<f32>, Vec<i64>)]) -> Option<Self> {
        let get = |name: &str, shape: &[i64]| -> Option<&[f32]> {
            params
                .iter()
                .find(|(n, _, s)| n == name && s == shape)
                .map(|(_, v, _)| v.as_slice())
        };
        let h = H as i64;
        let first = get("mlp.0.weight", &[h, (2 * NODE_INPUTS + GEOMETRY) as i64])?;
        let column = |w: &[f32], width: usize, c: usize| -> [f32; H] {
            std::array::from_fn(|j| w[j * width + c])
        };
        let row = |v: &[f32]| -> [f32; H] { std::array::from_fn(|j| v[j]) };
        let width = 2 * NODE_INPUTS + GEOMETRY;
        let ends = [0, 1].map(|e| {
            (0..NODE_INPUTS)
                .map(|c| column(first, width, e * NODE_INPUTS + c))
                .collect()
        });
        let geometry = std::array::from_fn(|g| column(first, width, 2 * NODE_INPUTS + g));
        let norm = |i: usize| -> Option<([f32; H], [f32; H])> {
            Some((
                row(get(&format!("mlp.{i}.weight"), &[h])?),
                row(get(&format!("mlp.{i}.bias"), &[h])?),
            ))
        };
        let first_norm = norm(1)?;
        let mut blocks = Vec::new();
        let mut i = 3;
        while let Some(w) = get(&format!("mlp.{i}.weight"), &[h, h]) {
            let (gamma, beta) = norm(i + 1)?;
            blocks.push(Block {
                weight: (0..H).map(|k| column(w, H, k)).collect(),
                bias: row(get(&format!("mlp.{i}.bias"), &[h])?),
                gamma,
                beta,
            });
            i += 3;
        }
        let out_weight = row(get(&format!("mlp.{i}.weight"), &[1, h])?);
        let out_bias = get(&format!("mlp.{i}.bias"), &[1])?[0];
        // every parameter accounted for: 2 (first) + 2 (norm) + 4 per block + 2 (out)
        if params.len() != 6 + 4 * blocks.len() {
            return None;
        }
        Some(Self {
            ends,
            geometry,
            first_bias: row(get("mlp.0.bias", &[h])?),
            first_norm,
            blocks,
            out_weight,
            out_bias,
        })
    }

    /// `[N][H]` first-layer block of every spacepoint for one end (0 source, 1 destination).
    fn end_parts(&self, end: usize, inputs: &[[f32; NODE_INPUTS]]) -> Vec<[f32; H]> {
        inputs
            .par_iter()
            .map(|x| {
                let mut acc = [0f32; H];
                for (c, w) in self.ends[end].iter().enumerate() {
                    for j in 0..H {
                        acc[j] += x[c] * w[j];
                    }
                }
                acc
            })
            .collect()
    }

    #[inline(always)]
    fn dense(block: &Block<H>, x: &[[f32; H]; TILE], y: &mut [[f32; H]; TILE]) {
        for out in y.iter_mut() {
            *out = block.bias;
        }
        for (k, w) in block.weight.iter().enumerate() {
            for t in 0..TILE {
                let v = x[t][k];
                for j in 0..H {
                    y[t][j] += v * w[j];
                }
            }
        }
    }

    /// Logits of the edges `src[i] -> dst[i]` into `out`.
    #[inline(always)]
    fn score(
        &self,
        sp: &Spacepoints,
        parts: &[Vec<[f32; H]>; 2],
        src: &[i64],
        dst: &[i64],
        out: &mut [f32],
    ) {
        let mut x = [[0f32; H]; TILE];
        let mut y = [[0f32; H]; TILE];
        for start in (0..out.len()).step_by(TILE) {
            let count = TILE.min(out.len() - start);
            for t in 0..count {
                let (a, b) = (src[start + t] as usize, dst[start + t] as usize);
                let geometry = sp.edge_geometry(a, b);
                let h = &mut x[t];
                let (ps, pd) = (&parts[0][a], &parts[1][b]);
                for j in 0..H {
                    h[j] = self.first_bias[j] + ps[j] + pd[j];
                }
                for (g, w) in geometry.iter().zip(&self.geometry) {
                    for j in 0..H {
                        h[j] += g * w[j];
                    }
                }
                norm_relu(h, &self.first_norm.0, &self.first_norm.1);
            }
            for block in &self.blocks {
                Self::dense(block, &x, &mut y);
                for h in y.iter_mut().take(count) {
                    norm_relu(h, &block.gamma, &block.beta);
                }
                std::mem::swap(&mut x, &mut y);
            }
            for t in 0..count {
                let logit = lane_sum::<H>(|j| x[t][j] * self.out_weight[j]);
                out[start + t] = logit + self.out_bias;
            }
        }
    }

    /// `portable`: the plain-Rust kernel even where AVX2 is there (tests compare the two).
    fn logits(
        &self,
        sp: &Spacepoints,
        inputs: &[[f32; NODE_INPUTS]],
        src: &[i64],
        dst: &[i64],
        portable: bool,
    ) -> Vec<f32> {
        let parts = [self.end_parts(0, inputs), self.end_parts(1, inputs)];
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(EDGES_PER_TASK)
            .enumerate()
            .for_each(|(task, out)| {
                let from = task * EDGES_PER_TASK;
                let (s, d) = (&src[from..from + out.len()], &dst[from..from + out.len()]);
                #[cfg(target_arch = "x86_64")]
                if !portable
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2::score` is compiled for.
                    unsafe { avx2::score(self, sp, &parts, s, d, out) };
                    return;
                }
                self.score(sp, &parts, s, d, out);
            });
        out
    }
}

impl FusedFilter {
    /// The fused filter for the TorchScript filter `model` (fp32, CPU), or `None` when its
    /// parameters are not a FilterNet's of a compiled width or its logits on a probe event
    /// differ from the file's.
    pub(crate) fn load(model: &TorchModel, num_features: usize) -> Result<Option<Self>> {
        if num_features != 9 {
            return Ok(None);
        }
        let mut params = Vec::new();
        for (name, t) in model.named_parameters()? {
            let t = t.f_to_kind(Kind::Float).map_err(torch_error("filter"))?;
            let shape = t.size();
            let values = Vec::<f32>::try_from(t.f_flatten(0, -1).map_err(torch_error("filter"))?)
                .map_err(torch_error("filter"))?;
            params.push((name, values, shape));
        }
        let width = params
            .iter()
            .find(|(n, _, _)| n == "mlp.0.bias")
            .map(|(_, v, _)| v.len());
        let net = match width {
            Some(32) => Net::from_parameters(&params).map(|n| Widths::H32(Box::new(n))),
            Some(48) => Net::from_parameters(&params).map(|n| Widths::H48(Box::new(n))),
            Some(64) => Net::from_parameters(&params).map(|n| Widths::H64(Box::new(n))),
            _ => None,
        };
        let Some(net) = net else {
            debug!(path = %model.path().display(), "filter is not a FilterNet of a fused width");
            return Ok(None);
        };
        let fused = Self { net };
        if !fused.agrees_with(model)? {
            warn!(
                path = %model.path().display(),
                "the fused CPU filter disagrees with the TorchScript file; using the file"
            );
            return Ok(None);
        }
        Ok(Some(fused))
    }

    /// Whether the kernel's logits on the probe event are the file's (to `PROBE_TOLERANCE`).
    fn agrees_with(&self, model: &TorchModel) -> Result<bool> {
        let (features, src, dst) = probe_event();
        let expected = probe_logits(model, &features, &src, &dst)?;
        let got = self.logits(&features, 9, &src, &dst);
        if got.iter().chain(&expected).any(|v| !v.is_finite()) {
            return Ok(false);
        }
        let worst = expected
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
            .fold(0f32, f32::max);
        debug!(path = %model.path().display(), difference = worst, "fused filter probe");
        Ok(worst <= PROBE_TOLERANCE)
    }

    /// `[E]` sigmoid scores of the edges `src -> dst` (f32, as libtorch's sigmoid of the logit).
    pub fn scores(
        &self,
        features: &[f32],
        num_features: usize,
        src: &[i64],
        dst: &[i64],
    ) -> Vec<f32> {
        let mut scores = self.logits(features, num_features, src, dst);
        scores
            .par_iter_mut()
            .for_each(|s| *s = 1.0 / (1.0 + (-*s).exp()));
        scores
    }

    /// `[E]` logits of the edges `src -> dst` of the spacepoints `features` (`[N, 9]` rows).
    pub fn logits(
        &self,
        features: &[f32],
        num_features: usize,
        src: &[i64],
        dst: &[i64],
    ) -> Vec<f32> {
        self.logits_with(features, num_features, src, dst, false)
    }

    fn logits_with(
        &self,
        features: &[f32],
        num_features: usize,
        src: &[i64],
        dst: &[i64],
        portable: bool,
    ) -> Vec<f32> {
        let rows = features.chunks_exact(num_features);
        let inputs: Vec<[f32; NODE_INPUTS]> = rows.clone().map(node_inputs).collect();
        let position: Vec<[f32; 3]> = rows.map(|r| [r[0], r[1], r[2]]).collect();
        let sp = Spacepoints {
            eta: position.iter().map(spacepoint_eta).collect(),
            position,
        };
        match &self.net {
            Widths::H32(n) => n.logits(&sp, &inputs, src, dst, portable),
            Widths::H48(n) => n.logits(&sp, &inputs, src, dst, portable),
            Widths::H64(n) => n.logits(&sp, &inputs, src, dst, portable),
        }
    }
}

/// A small event covering the geometry's branches: spacepoints spread over the detector (half
/// with strip clusters), edges between near and far pairs, both orientations, equal radii.
fn probe_event() -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let n = 97usize;
    // a fixed low-discrepancy sequence: no random-number crate needed, the same every load
    let u = |i: usize, k: usize| {
        ((i * 7919 + k * 104_729) as f64 * 0.618_033_988_749_895).fract() as f32
    };
    let mut features = Vec::with_capacity(n * 9);
    for i in 0..n {
        let r = 0.03 + 1.0 * u(i, 0);
        let phi = 2.0 * u(i, 1) - 1.0;
        let z = 6.0 * u(i, 2) - 3.0;
        let sp = [r, phi, z];
        features.extend_from_slice(&sp);
        for c in 0..2 {
            let off = if i % 2 == 0 {
                0.0
            } else {
                0.002 * (u(i, 3 + c) - 0.5)
            };
            features.extend_from_slice(&[r + off, phi - off, z + 2.0 * off]);
        }
    }
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    for i in 0..n {
        for step in [1usize, 2, 5, 31] {
            src.push(i as i64);
            dst.push(((i + step) % n) as i64);
        }
    }
    src.push(3);
    dst.push(3);
    (features, src, dst)
}

fn probe_logits(
    model: &TorchModel,
    features: &[f32],
    src: &[i64],
    dst: &[i64],
) -> Result<Vec<f32>> {
    let n = (features.len() / 9) as i64;
    let x = Tensor::f_from_slice(features)
        .and_then(|t| t.f_view([n, 9]))
        .map_err(torch_error("filter"))?;
    let index: Vec<i64> = src.iter().chain(dst).copied().collect();
    let edges = Tensor::f_from_slice(&index)
        .and_then(|t| t.f_view([2, src.len() as i64]))
        .map_err(torch_error("filter"))?;
    let logits = model.forward("filter", &[&x, &edges])?;
    let logits = logits
        .f_to_kind(Kind::Float)
        .and_then(|t| t.f_to_device(Device::Cpu))
        .and_then(|t| t.f_flatten(0, -1))
        .map_err(torch_error("filter"))?;
    if logits.numel() != src.len() {
        return Err(PipelineError::Input(format!(
            "model {}: {} logits for {} probe edges",
            model.path().display(),
            logits.numel(),
            src.len()
        )));
    }
    Vec::<f32>::try_from(logits).map_err(torch_error("filter"))
}

/// The kernel with AVX2 and FMA: per pair of edges the accumulators of a layer are 2 x V
/// registers of eight lanes; the activations feeding a layer sit in a small stack array from
/// which each input is broadcast.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Net, Spacepoints, LAYER_NORM_EPS, TILE};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: &[f32], v: usize) -> __m256 {
        debug_assert!(8 * v + 8 <= p.len());
        _mm256_loadu_ps(p.as_ptr().add(8 * v))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn horizontal_sum(x: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// LayerNorm then ReLU of one edge's accumulators, stored into `out`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn norm_relu<const V: usize>(
        acc: &[__m256; V],
        gamma: &[f32],
        beta: &[f32],
        out: &mut [f32],
    ) {
        let width = (8 * V) as f32;
        let mut sum = acc[0];
        for a in &acc[1..] {
            sum = _mm256_add_ps(sum, *a);
        }
        let mean = _mm256_set1_ps(horizontal_sum(sum) / width);
        let mut centred = [_mm256_setzero_ps(); V];
        let mut squares = _mm256_setzero_ps();
        for v in 0..V {
            centred[v] = _mm256_sub_ps(acc[v], mean);
            squares = _mm256_fmadd_ps(centred[v], centred[v], squares);
        }
        let var = horizontal_sum(squares) / width;
        let inv = _mm256_set1_ps(1.0 / (var + LAYER_NORM_EPS).sqrt());
        let zero = _mm256_setzero_ps();
        for v in 0..V {
            let scaled = _mm256_mul_ps(_mm256_mul_ps(centred[v], inv), load(gamma, v));
            let y = _mm256_max_ps(_mm256_add_ps(scaled, load(beta, v)), zero);
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * v), y);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn score<const H: usize, const V: usize>(
        net: &Net<H, V>,
        sp: &Spacepoints,
        parts: &[Vec<[f32; H]>; 2],
        src: &[i64],
        dst: &[i64],
        out: &mut [f32],
    ) {
        assert_eq!(H, 8 * V);
        let mut x = [[0f32; H]; TILE];
        for start in (0..out.len()).step_by(TILE) {
            let count = TILE.min(out.len() - start);
            for t in 0..count {
                let (a, b) = (src[start + t] as usize, dst[start + t] as usize);
                let geometry = sp.edge_geometry(a, b);
                let (ps, pd) = (&parts[0][a], &parts[1][b]);
                let mut acc = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    let mut h = _mm256_add_ps(load(&net.first_bias, v), load(ps, v));
                    h = _mm256_add_ps(h, load(pd, v));
                    for (g, w) in geometry.iter().zip(&net.geometry) {
                        h = _mm256_fmadd_ps(_mm256_set1_ps(*g), load(w, v), h);
                    }
                    acc[v] = h;
                }
                norm_relu(&acc, &net.first_norm.0, &net.first_norm.1, &mut x[t]);
            }
            for block in &net.blocks {
                let mut acc = [[_mm256_setzero_ps(); V]; TILE];
                for t in 0..TILE {
                    for v in 0..V {
                        acc[t][v] = load(&block.bias, v);
                    }
                }
                // 2 x V accumulators, TILE broadcasts and one weight vector: 15 of the 16
                // registers for V = 6 (holding all V weights too would spill accumulators)
                for (k, w) in block.weight.iter().enumerate() {
                    let xk: [__m256; TILE] = std::array::from_fn(|t| _mm256_broadcast_ss(&x[t][k]));
                    for v in 0..V {
                        let wv = load(w, v);
                        for t in 0..TILE {
                            acc[t][v] = _mm256_fmadd_ps(xk[t], wv, acc[t][v]);
                        }
                    }
                }
                for t in 0..count {
                    norm_relu(&acc[t], &block.gamma, &block.beta, &mut x[t]);
                }
            }
            for t in 0..count {
                let mut sum = _mm256_setzero_ps();
                for v in 0..V {
                    sum = _mm256_fmadd_ps(load(&x[t], v), load(&net.out_weight, v), sum);
                }
                out[start + t] = horizontal_sum(sum) + net.out_bias;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::stage::ExecutionContext;

    fn served_filter() -> (TorchModel, FusedFilter) {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../model_repository/exatrkx/1/filter.pt");
        let model = TorchModel::load(&path, &ExecutionContext::cpu()).unwrap();
        let fused = FusedFilter::load(&model, 9)
            .unwrap()
            .expect("the served filter is fused");
        (model, fused)
    }

    #[test]
    fn phi_wraps_as_torch_remainder_does() {
        for (d, want) in [
            (0.25, 0.25),
            (1.5, -0.5),
            (-1.5, 0.5),
            (-1.0, -1.0),
            (1.0, -1.0),
            (2.0, 0.0),
        ] {
            assert!(
                (wrap_phi(d) - want).abs() < 1e-6,
                "wrap_phi({d}) = {}",
                wrap_phi(d)
            );
        }
    }

    #[test]
    fn portable_and_vector_kernels_agree_with_the_file() {
        let _no_grad = tch::no_grad_guard();
        let (model, fused) = served_filter();
        let (features, src, dst) = probe_event();
        let want = probe_logits(&model, &features, &src, &dst).unwrap();
        for portable in [true, false] {
            let got = fused.logits_with(&features, 9, &src, &dst, portable);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-4,
                "portable {portable}: largest logit difference {worst}"
            );
        }
    }

    #[test]
    fn a_network_other_than_its_weights_say_is_refused_by_the_probe() {
        let _no_grad = tch::no_grad_guard();
        let (model, mut fused) = served_filter();
        // the same parameter shapes, another function: a layer norm scaled twice
        if let Widths::H48(net) = &mut fused.net {
            net.first_norm.0.iter_mut().for_each(|g| *g *= 2.0);
        }
        assert!(!fused.agrees_with(&model).unwrap());
        let (_, fused) = served_filter();
        assert!(fused.agrees_with(&model).unwrap());
    }
}
