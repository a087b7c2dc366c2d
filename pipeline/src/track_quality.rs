//! Track-quality selection: every candidate of track building gets a row of
//! `NUM_TRACK_FEATURES` numbers (its helix fit, the GNN scores along it and leaving it, where it
//! came from), a small TorchScript network (`track_model`, `x f32[T, 18] -> f32[T]` logits)
//! scores the rows, and candidates whose sigmoid score is not above `track_cut` are dropped.
//! Fakes are mostly two particles' fragments joined by one weaker edge, which a fit and the
//! scores around the candidate show better than one edge's score does.
//!
//! The rows (docs/DESIGN.md; `python/exatrkx/track_quality.py` computes the same):
//! 0 spacepoints; 1 1/pT (1/GeV, at most 10, 0 when straight); 2 ln(1 + |d0|/mm);
//! 3 |z0| / 100 mm; 4 ln(1 + chi2/ndf) (0 without ndf); 5 |eta|; 6-8 min, mean, max score of
//! the edges between consecutive spacepoints (by radius, then index; either direction, the
//! higher; 0 without an edge); 9 strip fraction; 10 second walkthrough pass (0/1); 11-12 max
//! and mean over the spacepoints of the best score of an edge leaving the candidate; 13-14
//! ln(1 + largest residual / sigma) of the fit, transverse (0.05 mm) and in z (0.5 mm); 15
//! fraction of consecutive pairs less than 5 mm apart in r and 20 mm in z (module overlaps);
//! 16 fraction of spacepoints whose best edge leaving scores above their best edge inside; 17
//! the lowest best-edge-inside score.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use rayon::prelude::*;
use tch::{Kind, Tensor};

use crate::error::{PipelineError, Result};
use crate::fit::{crossing_positions, helix, members_by_track, FitConfig, Helix};
use crate::model::TorchModel;
use crate::stage::{torch_error, ExecutionContext, TrackLabels};
use crate::track_building::{relabel, ScoredEdges};

pub const NUM_TRACK_FEATURES: usize = 18;

/// A hasher for the pair keys: one multiplication (Fibonacci hashing), where the default
/// SipHash cost about as much as the rest of the stage's per-edge work.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = (self.0 ^ key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        // the table indexes by the low bits: fold the well-mixed high ones down
        self.0 ^ (self.0 >> 32)
    }
}

type PairMap = HashMap<u64, f32, BuildHasherDefault<PairHasher>>;

/// Key of an unordered spacepoint pair.
fn pair_key(a: i64, b: i64, n: usize) -> u64 {
    (a.min(b) as u64) * n as u64 + a.max(b) as u64
}

/// Mean of `values` summed in order in f64.
fn mean(values: &[f32]) -> f64 {
    values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64
}

fn max(values: &[f32]) -> f32 {
    values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `[T, NUM_TRACK_FEATURES]` row-major rows of the tracks `0..T`; `edges` are those track
/// building read.
pub fn track_features(
    features: &[f32],
    num_features: usize,
    tracks: &TrackLabels,
    edges: ScoredEdges,
) -> Vec<f32> {
    let labels = &tracks.labels;
    let n = labels.len();
    let mut rows = vec![0f32; tracks.num_tracks * NUM_TRACK_FEATURES];
    if tracks.num_tracks == 0 {
        return rows;
    }
    let mut pair_best = PairMap::with_capacity_and_hasher(edges.len(), Default::default());
    // best score per spacepoint of an edge leaving its track (to another or none) / inside it
    let mut leaving = vec![0f32; n];
    let mut inside = vec![0f32; n];
    for (a, b, w) in edges.iter() {
        let best = pair_best.entry(pair_key(a, b, n)).or_insert(w);
        *best = best.max(w);
        let best = if labels[a as usize] != labels[b as usize] {
            &mut leaving
        } else {
            &mut inside
        };
        best[a as usize] = best[a as usize].max(w);
        best[b as usize] = best[b as usize].max(w);
    }
    let radius = |i: u32| features[i as usize * num_features];
    let is_strip = |i: u32| {
        let row = &features[i as usize * num_features..(i as usize + 1) * num_features];
        (3..num_features.min(9)).any(|c| row[c] != row[c % 3])
    };
    let cfg = FitConfig::default();
    let row_of = |t: usize, hits: &mut Vec<u32>| -> [f32; NUM_TRACK_FEATURES] {
        let [x, y, z] = crossing_positions(features, num_features, hits);
        // track building keeps two spacepoints at least; a lone one reads as a straight track
        let h = helix(&x, &y, &z, &cfg).unwrap_or(Helix {
            pt: f64::INFINITY,
            eta: 0.0,
            phi: 0.0,
            d0: 0.0,
            z0: 0.0,
            chi2_ndf: f64::NAN,
            max_transverse_residual: 0.0,
            max_z_residual: 0.0,
        });
        let mut pair: Vec<f32> = hits
            .windows(2)
            .map(|w| {
                let key = pair_key(w[0] as i64, w[1] as i64, n);
                pair_best.get(&key).copied().unwrap_or(0.0)
            })
            .collect();
        if pair.is_empty() {
            pair.push(0.0);
        }
        let out: Vec<f32> = hits.iter().map(|&i| leaving[i as usize]).collect();
        let within: Vec<f32> = hits.iter().map(|&i| inside[i as usize]).collect();
        let r: Vec<f64> = hits.iter().map(|&i| 1000.0 * radius(i) as f64).collect();
        let overlaps = (1..hits.len())
            .filter(|&k| r[k] - r[k - 1] < 5.0 && (z[k] - z[k - 1]).abs() < 20.0)
            .count();
        let ambiguous = out.iter().zip(&within).filter(|(o, i)| o > i).count();
        let strips = hits.iter().filter(|&&i| is_strip(i)).count();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let row = [
            hits.len() as f64,
            if h.pt.is_infinite() {
                0.0
            } else {
                (1.0 / h.pt).min(10.0)
            },
            h.d0.abs().ln_1p(),
            h.z0.abs() / 100.0,
            if h.chi2_ndf.is_finite() {
                h.chi2_ndf.ln_1p()
            } else {
                0.0
            },
            h.eta.abs(),
            pair.iter().copied().fold(f32::INFINITY, f32::min) as f64,
            mean(&pair),
            max(&pair) as f64,
            strips as f64 / hits.len() as f64,
            flag(tracks.second_pass.get(t).copied().unwrap_or(false)),
            max(&out) as f64,
            mean(&out),
            (h.max_transverse_residual / cfg.sigma_transverse).ln_1p(),
            (h.max_z_residual / cfg.sigma_z).ln_1p(),
            overlaps as f64 / hits.len().saturating_sub(1).max(1) as f64,
            ambiguous as f64 / hits.len() as f64,
            within.iter().copied().fold(f32::INFINITY, f32::min) as f64,
        ];
        row.map(|v| v as f32)
    };
    let per_track: Vec<[f32; NUM_TRACK_FEATURES]> = members_by_track(labels, tracks.num_tracks)
        .par_iter_mut()
        .enumerate()
        .map(|(t, hits)| row_of(t, hits))
        .collect();
    for (t, row) in per_track.iter().enumerate() {
        rows[t * NUM_TRACK_FEATURES..(t + 1) * NUM_TRACK_FEATURES].copy_from_slice(row);
    }
    rows
}

/// The loaded track-quality network. It runs on the CPU in fp32 whatever the pipeline's
/// device: a few thousand rows of 18 numbers per event.
pub struct TrackQuality {
    model: TorchModel,
}

impl TrackQuality {
    pub fn load(path: &Path) -> Result<Self> {
        let model = TorchModel::load(path, &ExecutionContext::cpu())?;
        let width = model.int_method("num_track_features")?;
        if width != NUM_TRACK_FEATURES {
            return Err(PipelineError::ModelLoad {
                path: path.display().to_string(),
                reason: format!(
                    "reads {width} track features, the pipeline computes {NUM_TRACK_FEATURES}"
                ),
            });
        }
        Ok(Self { model })
    }

    /// Sigmoid scores of the rows.
    pub fn scores(&self, rows: &[f32]) -> Result<Vec<f32>> {
        let t = rows.len() / NUM_TRACK_FEATURES;
        if t == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::f_from_slice(rows)
            .and_then(|x| x.f_view([t as i64, NUM_TRACK_FEATURES as i64]))
            .map_err(torch_error("track_quality"))?;
        let logits = self.model.forward("track_quality", &[&x])?;
        if logits.numel() != t {
            return Err(self.model.bad_output(format!(
                "output shape {:?} for {t} tracks, expected [{t}]",
                logits.size()
            )));
        }
        let s = logits
            .f_reshape([t as i64])
            .and_then(|l| l.f_to_kind(Kind::Float))
            .and_then(|l| l.f_sigmoid())
            .map_err(torch_error("track_quality"))?;
        Vec::<f32>::try_from(&s).map_err(torch_error("track_quality"))
    }

    /// The tracks scored above `cut`, numbered by smallest spacepoint again.
    pub fn select(
        &self,
        features: &[f32],
        num_features: usize,
        tracks: &TrackLabels,
        edges: ScoredEdges,
        cut: f32,
    ) -> Result<TrackLabels> {
        let rows = track_features(features, num_features, tracks, edges);
        let keep: Vec<bool> = self.scores(&rows)?.iter().map(|&s| s > cut).collect();
        Ok(relabel(tracks, |t| keep[t]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three spacepoints on a straight line from the beam line (r = 100, 200, 300 mm at phi 0,
    /// z = r / 10; the last a strip spacepoint) and one outside the track.
    fn event() -> (Vec<f32>, TrackLabels) {
        let mut x = Vec::new();
        for (k, r) in [0.1f32, 0.2, 0.3, 0.5].into_iter().enumerate() {
            let own = [r, 0.0, r / 10.0];
            let cluster = if k == 2 { [r, 0.001, r / 10.0] } else { own };
            x.extend(own.iter().chain(&cluster).chain(&own));
        }
        let tracks = TrackLabels {
            labels: vec![0, 0, 0, -1],
            num_tracks: 1,
            second_pass: vec![true],
        };
        (x, tracks)
    }

    #[test]
    fn rows_follow_the_definitions() {
        let (x, tracks) = event();
        // (1, 0) repeats the pair (0, 1) with a higher score; (2, 3) leaves the track
        let (src, dst, w) = ([0i64, 1, 1, 2], [1i64, 2, 0, 3], [0.9f32, 0.8, 0.95, 0.3]);
        let rows = track_features(&x, 9, &tracks, ScoredEdges::new(&src, &dst, &w));
        assert_eq!(rows.len(), NUM_TRACK_FEATURES);
        let eta = 0.1f64.asinh() as f32;
        let want = [
            3.0,
            0.0,
            0.0,
            0.0,
            0.0,
            eta,
            0.8,
            0.875,
            0.95,
            1.0 / 3.0,
            1.0,
            0.3,
            0.1,
        ];
        for (k, (&got, want)) in rows.iter().zip(want).enumerate() {
            assert!((got - want).abs() < 1e-5, "feature {k}: {got} vs {want}");
        }
        // a first-pass track without edges leaving it
        let first = TrackLabels {
            second_pass: vec![false],
            ..tracks.clone()
        };
        let rows = track_features(
            &x,
            9,
            &first,
            ScoredEdges::new(&src[..3], &dst[..3], &w[..3]),
        );
        assert_eq!((rows[10], rows[11], rows[12]), (0.0, 0.0, 0.0));
        // a leaving edge above every edge inside spacepoint 2; spacepoint 3 moved onto a module
        // overlap of 2 (2 mm out in r, 3 mm in z) and into the track
        let mut x = x.clone();
        x[27] = 0.302;
        x[29] = 0.033;
        x[33] = 0.302;
        x[35] = 0.033;
        let tracks = TrackLabels {
            labels: vec![0, 0, 0, 0],
            ..tracks
        };
        let edges = ScoredEdges::new(&[0, 1, 2], &[1, 2, 3], &[0.9, 0.8, 0.7]);
        let rows = track_features(&x, 9, &tracks, edges);
        assert!((rows[15] - 1.0 / 3.0).abs() < 1e-6, "overlaps {}", rows[15]);
        assert_eq!((rows[16], rows[17]), (0.0, 0.7));
        let lone = TrackLabels {
            labels: vec![0, 0, 0, -1],
            ..tracks
        };
        let edges = ScoredEdges::new(&[0, 1, 2], &[1, 2, 3], &[0.9, 0.6, 0.7]);
        let rows = track_features(&x, 9, &lone, edges);
        assert!((rows[16] - 1.0 / 3.0).abs() < 1e-6 && rows[17] == 0.6);
        assert!(
            rows[13] > 0.0 || rows[14] > 0.0,
            "a kinked track has residuals"
        );
    }

    #[test]
    fn a_curved_track_has_its_curvature_and_a_missing_edge_scores_zero() {
        // points on a circle of radius 1667 mm through the origin (pT 1 GeV in 2 T)
        let radius = 1000.0 / 0.6;
        let mut x = Vec::new();
        for r in [100.0f64, 300.0, 500.0, 700.0] {
            // chord of length r from the origin: angle asin(r / 2R) off the initial direction
            let phi = (r / (2.0 * radius)).asin();
            let own = [
                (r / 1000.0) as f32,
                (phi / std::f64::consts::PI) as f32,
                0.0,
            ];
            x.extend(own.iter().chain(&own).chain(&own));
        }
        let tracks = TrackLabels {
            labels: vec![0; 4],
            num_tracks: 1,
            second_pass: vec![false],
        };
        let edges = ScoredEdges::new(&[0, 1], &[1, 2], &[0.6, 0.7]);
        let rows = track_features(&x, 9, &tracks, edges);
        assert!((rows[1] - 1.0).abs() < 1e-3, "1/pT {}", rows[1]);
        assert!(rows[2] < 1e-3, "ln(1 + |d0|) {}", rows[2]);
        assert_eq!((rows[6], rows[8]), (0.0, 0.7));
        assert!((rows[7] - 1.3 / 3.0).abs() < 1e-6);
    }
}
