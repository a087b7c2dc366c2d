//! The edge classifiers on the CPU as fused passes: each edge's activations stay in
//! registers from its inputs to its output, where libtorch runs the networks op by op over
//! chunks of edges and spends most of its time writing and re-reading `[E, H]` activations
//! between ops (layer norms, adds, gathers, scatter-adds: 70-80% against 20-30% in matrix
//! products, MODEL_CARD.md). `filter` holds the FilterNet, `gnn` the heterogeneous
//! interaction network; both read the weights of the TorchScript file and are used only when
//! its outputs on a probe event agree with theirs (`agrees_with_file`), so a network of another
//! shape keeps running through libtorch. `simd` has the vector kernels.
// The kernels' loops index several arrays (lanes, registers, tiles) at once.
#![allow(clippy::needless_range_loop)]

use tch::{Device, Kind, Tensor};
use tracing::debug;

use crate::error::{PipelineError, Result};
use crate::model::TorchModel;
use crate::stage::torch_error;

pub mod filter;
pub mod gnn;
mod simd;

use simd::Parameters;

/// r, cos phi, sin phi, z, eta, then dr, dphi, dz of both strip clusters (`node_inputs`).
const NODE_INPUTS: usize = 11;
/// The first five: a pixel spacepoint's own (`NUM_SPACEPOINT_INPUTS`).
const SPACEPOINT_INPUTS: usize = 5;
/// dr, dphi, dz, deta, phi slope, z0 (`pair_geometry`).
const GEOMETRY: usize = 6;
/// Edges per rayon task.
const EDGES_PER_TASK: usize = 4096;
/// Spacepoints per rayon task in the per-spacepoint products and networks.
const NODES_PER_TASK: usize = 1024;
/// Largest output difference from the TorchScript file accepted on the probe event, relative
/// to 1 + |output| (float rounding of another summation order is about 1e-5).
const PROBE_TOLERANCE: f32 = 1e-3;

/// `torch.remainder(d + 1, 2) - 1`: a phi/pi difference wrapped into [-1, 1).
#[inline(always)]
fn wrap_phi(d: f32) -> f32 {
    let a = d + 1.0;
    a - 2.0 * (a / 2.0).floor() - 1.0
}

fn spacepoint_eta(p: &[f32; 3]) -> f32 {
    (p[2] / p[0].max(1e-6)).asinh()
}

/// The network inputs of one spacepoint (`node_inputs` with 9 feature columns).
fn node_inputs(row: &[f32]) -> [f32; NODE_INPUTS] {
    let phi = row[1] * std::f32::consts::PI;
    let mut out = [0f32; NODE_INPUTS];
    out[..SPACEPOINT_INPUTS].copy_from_slice(&[
        row[0],
        phi.cos(),
        phi.sin(),
        row[2],
        spacepoint_eta(&[row[0], row[1], row[2]]),
    ]);
    for (k, first) in [3usize, 6].into_iter().enumerate() {
        let d: [f32; 3] = std::array::from_fn(|c| row[first + c] - row[c]);
        let o = SPACEPOINT_INPUTS + 3 * k;
        out[o] = 20.0 * d[0];
        out[o + 1] = 20.0 * wrap_phi(d[1]);
        out[o + 2] = 20.0 * d[2];
    }
    out
}

/// Per spacepoint: its network inputs, (r/1000, phi/pi, z/1000) and eta, f32 as in the
/// TorchScript files.
struct Spacepoints {
    inputs: Vec<[f32; NODE_INPUTS]>,
    position: Vec<[f32; 3]>,
    eta: Vec<f32>,
}

impl Spacepoints {
    /// The rows `[N, num_features]` of the spacepoints `nodes` (all when `None`).
    fn new(features: &[f32], num_features: usize, nodes: Option<&[u32]>) -> Self {
        let row = |i: usize| &features[i * num_features..(i + 1) * num_features];
        let rows: Vec<&[f32]> = match nodes {
            Some(nodes) => nodes.iter().map(|&i| row(i as usize)).collect(),
            None => features.chunks_exact(num_features).collect(),
        };
        let position: Vec<[f32; 3]> = rows.iter().map(|r| [r[0], r[1], r[2]]).collect();
        Self {
            inputs: rows.iter().map(|r| node_inputs(r)).collect(),
            eta: position.iter().map(spacepoint_eta).collect(),
            position,
        }
    }

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

/// The parameters of `model` as f32 on the host.
fn parameters(model: &TorchModel, stage: &'static str) -> Result<Parameters> {
    let mut params = Vec::new();
    for (name, t) in model.named_parameters()? {
        let t = t
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_to_device(Device::Cpu))
            .map_err(torch_error(stage))?;
        let shape = t.size();
        let values = t
            .f_flatten(0, -1)
            .and_then(Vec::<f32>::try_from)
            .map_err(torch_error(stage))?;
        params.push((name, values, shape));
    }
    Ok(Parameters(params))
}

/// A small event covering the networks' branches: spacepoints spread over the detector (pixel
/// and strip radii, half with strip clusters), edges between near and far pairs, both
/// orientations, a self-loop, nodes of several degrees.
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
        features.extend_from_slice(&[r, phi, z]);
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
            if step < 31 || i % 3 == 0 {
                src.push(i as i64);
                dst.push(((i + step) % n) as i64);
            }
        }
    }
    src.push(3);
    dst.push(3);
    (features, src, dst)
}

/// The file's `[E]` f32 outputs for the probe event.
fn probe_outputs(
    model: &TorchModel,
    stage: &'static str,
    features: &[f32],
    src: &[i64],
    dst: &[i64],
) -> Result<Vec<f32>> {
    let n = (features.len() / 9) as i64;
    let x = Tensor::f_from_slice(features)
        .and_then(|t| t.f_view([n, 9]))
        .map_err(torch_error(stage))?;
    let index: Vec<i64> = src.iter().chain(dst).copied().collect();
    let edges = Tensor::f_from_slice(&index)
        .and_then(|t| t.f_view([2, src.len() as i64]))
        .map_err(torch_error(stage))?;
    let out = model
        .forward(stage, &[&x, &edges])?
        .f_to_kind(Kind::Float)
        .and_then(|t| t.f_to_device(Device::Cpu))
        .and_then(|t| t.f_flatten(0, -1))
        .map_err(torch_error(stage))?;
    if out.numel() != src.len() {
        return Err(PipelineError::Input(format!(
            "model {}: {} outputs for {} probe edges",
            model.path().display(),
            out.numel(),
            src.len()
        )));
    }
    Vec::<f32>::try_from(out).map_err(torch_error(stage))
}

/// Whether `logits` (a fused kernel's function of features and edges) gives the file's
/// outputs on the probe event, to `PROBE_TOLERANCE`.
fn agrees_with_file(
    model: &TorchModel,
    stage: &'static str,
    logits: impl Fn(&[f32], &[i64], &[i64]) -> Vec<f32>,
) -> Result<bool> {
    let (features, src, dst) = probe_event();
    let expected = probe_outputs(model, stage, &features, &src, &dst)?;
    let got = logits(&features, &src, &dst);
    if got.len() != expected.len() || got.iter().chain(&expected).any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let worst = expected
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
        .fold(0f32, f32::max);
    debug!(path = %model.path().display(), stage, difference = worst, "fused kernel probe");
    Ok(worst <= PROBE_TOLERANCE)
}

/// The fused kernel for the TorchScript network `model` of the edge classifier `stage`
/// (`filter`, or `gnn` and its refining passes `gnn_refine*`), when `model` is one it
/// reproduces.
pub(crate) fn load(stage: &str, model: &TorchModel) -> Result<Option<Box<dyn FusedKernel>>> {
    let num_features = model.int_method("num_features")?;
    Ok(match stage {
        "filter" => filter::FusedFilter::load(model, num_features)?
            .map(|k| Box::new(k) as Box<dyn FusedKernel>),
        gnn if gnn.starts_with("gnn") => {
            gnn::FusedGnn::load(model, num_features)?.map(|k| Box::new(k) as Box<dyn FusedKernel>)
        }
        _ => None,
    })
}

/// Whether the fused kernels run here: on CPUs with AVX2 and FMA. Elsewhere libtorch picks
/// kernels for what the CPU has; the plain-Rust form (baseline instructions) is for the tests.
pub fn available() -> bool {
    simd::have_avx2()
}

/// A fused edge classifier: the logits of edges from the spacepoint features.
pub(crate) trait FusedKernel: Send + Sync {
    /// `[E]` logits of the edges `src -> dst` of the spacepoints `features` (`[N,
    /// num_features]` rows); `portable`: the plain-Rust vectors even where AVX2 is there
    /// (tests compare the two).
    fn logits_with(
        &self,
        features: &[f32],
        num_features: usize,
        src: &[i64],
        dst: &[i64],
        portable: bool,
    ) -> Vec<f32>;

    /// `[E]` sigmoid scores of the edges `src -> dst`.
    fn scores(&self, features: &[f32], num_features: usize, src: &[i64], dst: &[i64]) -> Vec<f32> {
        let mut scores = self.logits_with(features, num_features, src, dst, false);
        sigmoid(&mut scores);
        scores
    }

    /// `self` when its logits on the probe event are those of `model` (`stage` names it).
    fn checked(self, model: &TorchModel, stage: &'static str) -> Result<Option<Self>>
    where
        Self: Sized,
    {
        let agrees = agrees_with_file(model, stage, |f, s, d| self.logits_with(f, 9, s, d, false))?;
        Ok(agrees.then_some(self))
    }
}

/// `task(from, chunk)` over `out` cut into rayon tasks of `per_task` rows, `from` being the
/// position of the chunk's first row.
fn in_tasks<T: Send>(out: &mut [T], per_task: usize, task: impl Fn(usize, &mut [T]) + Sync) {
    use rayon::prelude::*;
    out.par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(k, chunk)| task(k * per_task, chunk));
}

/// `row @ dense` without its bias for every row (a network's first-layer block applied once
/// per spacepoint), `T` rows per tile.
fn row_products<R, const H: usize, const V: usize, const T: usize>(
    dense: &simd::Dense<H>,
    rows: &[R],
    avx2: bool,
) -> Vec<[f32; H]>
where
    R: AsRef<[f32]> + Sync,
{
    let mut out = vec![[0f32; H]; rows.len()];
    in_tasks(&mut out, NODES_PER_TASK, |from, out| {
        let rows = &rows[from..from + out.len()];
        simd::dispatch(RowProducts::<R, H, V, T> { dense, rows, out }, avx2)
    });
    out
}

/// One task's rows of `row_products`.
struct RowProducts<'a, R, const H: usize, const V: usize, const T: usize> {
    dense: &'a simd::Dense<H>,
    rows: &'a [R],
    out: &'a mut [[f32; H]],
}

impl<R: AsRef<[f32]>, const H: usize, const V: usize, const T: usize> simd::Kernel
    for RowProducts<'_, R, H, V, T>
{
    #[inline(always)]
    fn run<L: simd::Lanes>(self) {
        let last = self.rows.len() - 1;
        for (start, out) in (0..self.rows.len()).step_by(T).zip(self.out.chunks_mut(T)) {
            let x = std::array::from_fn(|t| self.rows[(start + t).min(last)].as_ref());
            let mut acc = [[L::zero(); V]; T];
            simd::accumulate(&mut acc, &self.dense.weight, x);
            for (t, row) in out.iter_mut().enumerate() {
                simd::store_row(&acc[t], row);
            }
        }
    }
}

/// Sigmoid in place (f32, as libtorch's of a logit).
fn sigmoid(values: &mut [f32]) {
    use rayon::prelude::*;
    values
        .par_iter_mut()
        .for_each(|s| *s = 1.0 / (1.0 + (-*s).exp()));
}

/// Test helper: both vector kinds of `fused` give the logits of `model` on the probe event.
#[cfg(test)]
fn assert_matches_file<K: FusedKernel>(fused: &K, model: &TorchModel, stage: &'static str) {
    let (features, src, dst) = probe_event();
    assert_matches_file_on(fused, model, stage, &features, &src, &dst);
}

/// The same on the event `features` (`[N, 9]` rows) with the edges `src -> dst`.
#[cfg(test)]
fn assert_matches_file_on<K: FusedKernel>(
    fused: &K,
    model: &TorchModel,
    stage: &'static str,
    features: &[f32],
    src: &[i64],
    dst: &[i64],
) {
    let _no_grad = tch::no_grad_guard();
    let want = probe_outputs(model, stage, features, src, dst).unwrap();
    for portable in [true, false] {
        let got = fused.logits_with(features, 9, src, dst, portable);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{stage}, portable {portable}: largest logit difference {worst}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
