//! The FilterNet (python/exatrkx/models/networks.py: a Linear over both ends' inputs and the
//! doublet geometry, then Linear / LayerNorm / ReLU blocks, one logit) in one pass per pair of
//! edges. The first layer's spacepoint blocks are computed once per spacepoint, as the
//! TorchScript file does.
use super::simd::{self, Dense, Kernel, Lanes, Norm, Parameters};
use super::{FusedKernel, Spacepoints, EDGES_PER_TASK, GEOMETRY, NODE_INPUTS};
use crate::error::Result;
use crate::model::TorchModel;

/// Edges scored together (`simd::accumulate`: two for width 48).
const TILE: usize = 2;

struct Net<const H: usize, const V: usize> {
    /// First layer: the source and destination spacepoint blocks (no bias), then the geometry
    /// block with the bias.
    ends: [Dense<H>; 2],
    geometry: Dense<H>,
    first_norm: Norm<H>,
    blocks: Vec<(Dense<H>, Norm<H>)>,
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

impl<const H: usize, const V: usize> Net<H, V> {
    /// `mlp.0` the first Linear, then `mlp.{1,4,7,..}` LayerNorms and `mlp.{3,6,..}` Linears,
    /// the last Linear to one logit; nothing else.
    fn from_parameters(params: &Parameters) -> Option<Self> {
        let first = params.dense::<H>("mlp.0", 2 * NODE_INPUTS + GEOMETRY, true)?;
        let mut rows = first.weight.into_iter();
        let mut take = |k: usize, bias: [f32; H]| Dense {
            weight: rows.by_ref().take(k).collect(),
            bias,
        };
        let ends = [take(NODE_INPUTS, [0.0; H]), take(NODE_INPUTS, [0.0; H])];
        let geometry = take(GEOMETRY, first.bias);
        let mut blocks = Vec::new();
        let mut i = 3;
        while let Some(dense) = params.dense::<H>(&format!("mlp.{i}"), H, true) {
            blocks.push((dense, params.norm(&format!("mlp.{}", i + 1))?));
            i += 3;
        }
        let out_weight = params.get(&format!("mlp.{i}.weight"), &[1, H as i64])?;
        let out_bias = params.get(&format!("mlp.{i}.bias"), &[1])?[0];
        // every parameter accounted for: 2 (first) + 2 (norm) + 4 per block + 2 (out)
        if params.len() != 6 + 4 * blocks.len() {
            return None;
        }
        Some(Self {
            ends,
            geometry,
            first_norm: params.norm("mlp.1")?,
            blocks,
            out_weight: std::array::from_fn(|j| out_weight[j]),
            out_bias,
        })
    }

    /// Logits of the edges `src[i] -> dst[i]` into `out`, in tiles of `TILE` edges.
    #[inline(always)]
    fn score<L: Lanes>(
        &self,
        sp: &Spacepoints,
        parts: &[Vec<[f32; H]>; 2],
        src: &[i64],
        dst: &[i64],
        out: &mut [f32],
    ) {
        let mut x = [[0f32; H]; TILE];
        let mut geometry = [[0f32; GEOMETRY]; TILE];
        for start in (0..out.len()).step_by(TILE) {
            let count = TILE.min(out.len() - start);
            let mut acc = [[L::zero(); V]; TILE];
            for t in 0..count {
                let (a, b) = (src[start + t] as usize, dst[start + t] as usize);
                geometry[t] = sp.edge_geometry(a, b);
                acc[t] = simd::load_row(&self.geometry.bias);
                simd::add_row(&mut acc[t], &parts[0][a]);
                simd::add_row(&mut acc[t], &parts[1][b]);
            }
            simd::accumulate(
                &mut acc,
                &self.geometry.weight,
                std::array::from_fn(|t| &geometry[t][..]),
            );
            let mut norm = &self.first_norm;
            for (dense, next_norm) in &self.blocks {
                for t in 0..count {
                    simd::store_row(&simd::norm_relu(&acc[t], norm), &mut x[t]);
                }
                acc = simd::dense(dense, std::array::from_fn(|t| &x[t][..]));
                norm = next_norm;
            }
            for t in 0..count {
                let h = simd::norm_relu(&acc[t], norm);
                out[start + t] = simd::dot(&h, &self.out_weight) + self.out_bias;
            }
        }
    }

    /// `portable`: the plain-Rust kernel even where AVX2 is there (tests compare the two).
    fn logits(&self, sp: &Spacepoints, src: &[i64], dst: &[i64], portable: bool) -> Vec<f32> {
        let avx2 = !portable && simd::have_avx2();
        // the first layer's blocks of both ends, once per spacepoint
        let parts = self
            .ends
            .each_ref()
            .map(|end| super::row_products::<_, H, V, TILE>(end, &sp.inputs, avx2));
        let mut out = vec![0f32; src.len()];
        super::in_tasks(&mut out, EDGES_PER_TASK, |from, out| {
            let (src, dst) = (&src[from..from + out.len()], &dst[from..from + out.len()]);
            let task = Score {
                net: self,
                sp,
                parts: &parts,
                src,
                dst,
                out,
            };
            simd::dispatch(task, avx2);
        });
        out
    }
}

/// One task's edges.
struct Score<'a, const H: usize, const V: usize> {
    net: &'a Net<H, V>,
    sp: &'a Spacepoints,
    parts: &'a [Vec<[f32; H]>; 2],
    src: &'a [i64],
    dst: &'a [i64],
    out: &'a mut [f32],
}

impl<const H: usize, const V: usize> Kernel for Score<'_, H, V> {
    #[inline(always)]
    fn run<L: Lanes>(self) {
        self.net
            .score::<L>(self.sp, self.parts, self.src, self.dst, self.out)
    }
}

impl FusedFilter {
    /// The fused filter for the TorchScript filter `model`, or `None` when its parameters are
    /// not a FilterNet's of a compiled width or its logits on the probe event differ from the
    /// file's.
    pub(crate) fn load(model: &TorchModel, num_features: usize) -> Result<Option<Self>> {
        if num_features != 9 {
            return Ok(None);
        }
        let params = super::parameters(model, "filter")?;
        let width = params
            .0
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
            return Ok(None);
        };
        Self { net }.checked(model, "filter")
    }
}

impl FusedKernel for FusedFilter {
    fn logits_with(
        &self,
        features: &[f32],
        num_features: usize,
        src: &[i64],
        dst: &[i64],
        portable: bool,
    ) -> Vec<f32> {
        let sp = Spacepoints::new(features, num_features, None);
        match &self.net {
            Widths::H32(n) => n.logits(&sp, src, dst, portable),
            Widths::H48(n) => n.logits(&sp, src, dst, portable),
            Widths::H64(n) => n.logits(&sp, src, dst, portable),
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
    fn portable_and_vector_kernels_agree_with_the_file() {
        let (model, fused) = served_filter();
        super::super::assert_matches_file(&fused, &model, "filter");
    }

    #[test]
    fn a_network_other_than_its_weights_say_is_refused_by_the_probe() {
        let _no_grad = tch::no_grad_guard();
        let (model, mut fused) = served_filter();
        let agrees = |fused: &FusedFilter| {
            super::super::agrees_with_file(&model, "filter", |f, s, d| {
                fused.logits_with(f, 9, s, d, false)
            })
            .unwrap()
        };
        assert!(agrees(&fused));
        // the same parameter shapes, another function: a layer norm scaled twice
        if let Widths::H48(net) = &mut fused.net {
            net.first_norm.gamma.iter_mut().for_each(|g| *g *= 2.0);
        }
        assert!(!agrees(&fused));
    }
}
