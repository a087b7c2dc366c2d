//! Particle production: minimum-bias and hard-scatter interactions, decays of K0s and Lambda,
//! photon conversions in the layers.
use rand::Rng;
use rand_distr::{Distribution, Exp1, Gamma, Poisson, StandardNormal};

use super::propagate::X0_SILICON;
use super::SimConfig;
use crate::detector::{Detector, LayerShape};
use crate::geom::{add, dot, norm, scale, unit, V3};

pub const M_PION: f64 = 0.139_570;
pub const M_KAON: f64 = 0.493_677;
pub const M_PROTON: f64 = 0.938_272;
pub const M_ELECTRON: f64 = 0.000_511;
pub const M_MUON: f64 = 0.105_658;
const M_K0S: f64 = 0.497_611;
const M_LAMBDA: f64 = 1.115_683;
/// Mean decay lengths c*tau (mm).
const CTAU_K0S: f64 = 26.84;
const CTAU_LAMBDA: f64 = 78.9;

/// A generated charged particle (GeV, mm).
#[derive(Clone, Copy, Debug)]
pub struct GenParticle {
    pub particle_type: i64,
    pub vertex: V3,
    pub p: V3,
    pub q: i32,
    pub mass: f64,
}

/// Inverse-CDF table of the transverse-momentum spectrum (Tsallis form).
pub struct Spectrum {
    pt: Vec<f64>,
    cdf: Vec<f64>,
}

impl Spectrum {
    pub fn tsallis(pt_min: f64, pt_max: f64, temperature: f64, n: f64) -> Spectrum {
        let steps = 4000;
        let pt: Vec<f64> = (0..=steps)
            .map(|i| pt_min * (pt_max / pt_min).powf(i as f64 / steps as f64))
            .collect();
        let pdf = |x: f64| {
            let mt = (x * x + M_PION * M_PION).sqrt();
            x * (1.0 + (mt - M_PION) / (n * temperature)).powf(-n)
        };
        let mut cdf = vec![0.0; pt.len()];
        for i in 1..pt.len() {
            cdf[i] = cdf[i - 1] + 0.5 * (pdf(pt[i]) + pdf(pt[i - 1])) * (pt[i] - pt[i - 1]);
        }
        let total = cdf[steps];
        cdf.iter_mut().for_each(|c| *c /= total);
        Spectrum { pt, cdf }
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> f64 {
        let u: f64 = rng.gen();
        let i = self
            .cdf
            .partition_point(|&c| c < u)
            .clamp(1, self.cdf.len() - 1);
        let (c0, c1) = (self.cdf[i - 1], self.cdf[i]);
        let f = if c1 > c0 { (u - c0) / (c1 - c0) } else { 0.0 };
        self.pt[i - 1] + f * (self.pt[i] - self.pt[i - 1])
    }
}

fn momentum(pt: f64, eta: f64, phi: f64) -> V3 {
    [pt * phi.cos(), pt * phi.sin(), pt * eta.sinh()]
}

/// A charged hadron or lepton species with the usual LHC proportions.
fn species<R: Rng>(rng: &mut R) -> (i64, f64) {
    let u: f64 = rng.gen();
    if u < 0.80 {
        (211, M_PION)
    } else if u < 0.92 {
        (321, M_KAON)
    } else if u < 0.99 {
        (2212, M_PROTON)
    } else if u < 0.995 {
        (11, M_ELECTRON)
    } else {
        (13, M_MUON)
    }
}

/// Signed PDG code for charge `q`: leptons carry the opposite sign convention.
fn signed_type(pdg: i64, q: i32) -> i64 {
    let lepton = pdg == 11 || pdg == 13;
    if (q > 0) != lepton {
        pdg
    } else {
        -pdg
    }
}

fn charged<R: Rng>(rng: &mut R, vertex: V3, p: V3) -> GenParticle {
    let (pdg, mass) = species(rng);
    let q = if rng.gen::<bool>() { 1 } else { -1 };
    GenParticle {
        particle_type: signed_type(pdg, q),
        vertex,
        p,
        q,
        mass,
    }
}

/// Lorentz boost of a rest-frame momentum `k` (energy `e`) by velocity `beta`.
fn boost(k: V3, e: f64, beta: V3) -> V3 {
    let b2 = dot(beta, beta);
    if b2 < 1e-18 {
        return k;
    }
    let gamma = 1.0 / (1.0 - b2).sqrt();
    let bk = dot(beta, k);
    add(k, scale(beta, (gamma - 1.0) * bk / b2 + gamma * e))
}

/// Two-body decay of a parent (mass `m`, momentum `p`) into masses m1, m2, isotropic at rest.
fn two_body<R: Rng>(rng: &mut R, m: f64, p: V3, m1: f64, m2: f64) -> (V3, V3) {
    let k = ((m * m - (m1 + m2).powi(2)) * (m * m - (m1 - m2).powi(2))).sqrt() / (2.0 * m);
    let cos: f64 = rng.gen_range(-1.0..1.0);
    let phi: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
    let sin = (1.0 - cos * cos).sqrt();
    let k1 = [k * sin * phi.cos(), k * sin * phi.sin(), k * cos];
    let e_parent = (dot(p, p) + m * m).sqrt();
    let beta = scale(p, 1.0 / e_parent);
    let e1 = (k * k + m1 * m1).sqrt();
    let e2 = (k * k + m2 * m2).sqrt();
    (boost(k1, e1, beta), boost(scale(k1, -1.0), e2, beta))
}

fn inside_tracker(v: V3) -> bool {
    v[0].hypot(v[1]) < 1000.0 && v[2].abs() < 2900.0
}

/// Decays a neutral hadron in flight (straight line) into a charged pair.
#[allow(clippy::too_many_arguments)]
fn decay_in_flight<R: Rng>(
    rng: &mut R,
    vertex: V3,
    p: V3,
    mass: f64,
    ctau: f64,
    daughters: [(i64, f64, i32); 2],
    out: &mut Vec<GenParticle>,
) {
    let length = norm(p) / mass * ctau * rng.sample::<f64, _>(Exp1);
    let at = add(vertex, scale(unit(p), length));
    if !inside_tracker(at) {
        return;
    }
    let (p1, p2) = two_body(rng, mass, p, daughters[0].1, daughters[1].1);
    for ((pdg, m, q), pd) in daughters.into_iter().zip([p1, p2]) {
        out.push(GenParticle {
            particle_type: pdg,
            vertex: at,
            p: pd,
            q,
            mass: m,
        });
    }
}

/// Converts a photon in the first layer where it does (probability 7/9 X/X0 per layer).
fn convert<R: Rng>(
    rng: &mut R,
    det: &Detector,
    cfg: &SimConfig,
    vertex: V3,
    p: V3,
    out: &mut Vec<GenParticle>,
) {
    let dir = unit(p);
    let dt = dir[0].hypot(dir[1]);
    let mut crossings: Vec<(f64, f64)> = Vec::with_capacity(24);
    for layer in &det.layers {
        let s = match layer.shape {
            LayerShape::Barrel => {
                if dt < 1e-9 {
                    continue;
                }
                let (ux, uy) = (dir[0] / dt, dir[1] / dt);
                let b = vertex[0] * ux + vertex[1] * uy;
                let c = vertex[0].powi(2) + vertex[1].powi(2) - layer.reference.powi(2);
                let st = -b + (b * b - c).max(0.0).sqrt();
                let s = st / dt;
                let z = vertex[2] + s * dir[2];
                if z < layer.z_min || z > layer.z_max {
                    continue;
                }
                s
            }
            LayerShape::Endcap => {
                let s = (layer.reference - vertex[2]) / dir[2];
                if s.is_nan() || s <= 0.0 {
                    continue;
                }
                let q = add(vertex, scale(dir, s));
                let r = q[0].hypot(q[1]);
                if r < layer.r_min || r > layer.r_max {
                    continue;
                }
                s
            }
        };
        let normal = match layer.shape {
            LayerShape::Barrel => dt,
            LayerShape::Endcap => dir[2].abs(),
        };
        let thickness = 2.0 * det.modules[layer.modules[0]].half_thickness;
        let x = thickness / normal.max(0.05) / X0_SILICON * cfg.material_scale;
        crossings.push((s, x));
    }
    crossings.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (s, x) in crossings {
        if rng.gen::<f64>() < 7.0 / 9.0 * x {
            let at = add(vertex, scale(dir, s));
            let share: f64 = rng.gen_range(0.02..0.98);
            for (q, f) in [(-1, share), (1, 1.0 - share)] {
                out.push(GenParticle {
                    particle_type: signed_type(11, q),
                    vertex: at,
                    p: scale(p, f),
                    q,
                    mass: M_ELECTRON,
                });
            }
            return;
        }
    }
}

/// Pseudorapidity: flat for |eta| < eta_plateau, exponential tails (length eta_tail) up to
/// eta_max.
fn sample_eta<R: Rng>(rng: &mut R, cfg: &SimConfig) -> f64 {
    let a = cfg.eta_plateau.min(cfg.eta_max);
    let lambda = cfg.eta_tail;
    let span = 1.0 - (-(cfg.eta_max - a) / lambda).exp();
    let tail = lambda * span;
    let abs = if rng.gen::<f64>() * (a + tail) < a {
        rng.gen_range(0.0..a.max(1e-12))
    } else {
        a - lambda * (1.0 - rng.gen::<f64>() * span).ln()
    };
    if rng.gen::<bool>() {
        abs
    } else {
        -abs
    }
}

/// Charged primaries of a minimum-bias-like interaction plus neutral sources of secondaries.
#[allow(clippy::too_many_arguments)]
fn soft_particles<R: Rng>(
    rng: &mut R,
    det: &Detector,
    cfg: &SimConfig,
    spectrum: &Spectrum,
    vertex: V3,
    mean: f64,
    primaries: &mut Vec<GenParticle>,
    secondaries: &mut Vec<GenParticle>,
) {
    // Negative-binomial multiplicity: a Gamma-distributed mean, then Poisson.
    let lambda = Gamma::new(cfg.nbd_k, mean / cfg.nbd_k)
        .map(|g| g.sample(rng))
        .unwrap_or(mean);
    let poisson = |rng: &mut R, l: f64| -> usize {
        if l <= 0.0 {
            0
        } else {
            Poisson::new(l).map(|p| p.sample(rng) as usize).unwrap_or(0)
        }
    };
    let n = poisson(rng, lambda);
    let direction = |rng: &mut R, pt: f64| {
        let eta = sample_eta(rng, cfg);
        let phi = rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI);
        momentum(pt, eta, phi)
    };
    for _ in 0..n {
        let pt = spectrum.sample(rng);
        let p = direction(rng, pt);
        primaries.push(charged(rng, vertex, p));
    }
    let scale_n = lambda * cfg.secondary_scale;
    for _ in 0..poisson(rng, 0.06 * scale_n) {
        let pt = spectrum.sample(rng);
        let p = direction(rng, pt);
        if rng.gen::<f64>() < 0.69 {
            let d = [(211, M_PION, 1), (-211, M_PION, -1)];
            decay_in_flight(rng, vertex, p, M_K0S, CTAU_K0S, d, secondaries);
        }
    }
    for _ in 0..poisson(rng, 0.02 * scale_n) {
        let pt = spectrum.sample(rng);
        let p = direction(rng, pt);
        if rng.gen::<f64>() < 0.64 {
            let anti = rng.gen::<bool>();
            let s = if anti { -1 } else { 1 };
            let d = [
                (2212 * s as i64, M_PROTON, s),
                (-211 * s as i64, M_PION, -s),
            ];
            decay_in_flight(rng, vertex, p, M_LAMBDA, CTAU_LAMBDA, d, secondaries);
        }
    }
    for _ in 0..poisson(rng, 1.0 * scale_n) {
        let pt = 0.5 * spectrum.sample(rng) + 0.05;
        let p = direction(rng, pt);
        convert(rng, det, cfg, vertex, p, secondaries);
    }
}

/// One interaction's charged particles: primaries first, then secondaries.
pub fn interaction<R: Rng>(
    rng: &mut R,
    det: &Detector,
    cfg: &SimConfig,
    spectrum: &Spectrum,
    hard_scatter: bool,
) -> Vec<GenParticle> {
    let normal = |rng: &mut R| rng.sample::<f64, _>(StandardNormal);
    let vertex = [
        normal(rng) * cfg.beam_sigma_xy,
        normal(rng) * cfg.beam_sigma_xy,
        normal(rng) * cfg.beam_sigma_z,
    ];
    let mut primaries = Vec::new();
    let mut secondaries = Vec::new();
    let mean = if hard_scatter {
        1.5 * cfg.charged_per_interaction
    } else {
        cfg.charged_per_interaction
    };
    soft_particles(
        rng,
        det,
        cfg,
        spectrum,
        vertex,
        mean,
        &mut primaries,
        &mut secondaries,
    );
    if hard_scatter {
        // A few jets and two isolated leptons, like top-pair production.
        let jets = 2 + Poisson::new(2.0)
            .map(|p| p.sample(rng) as usize)
            .unwrap_or(0);
        for _ in 0..jets {
            let jet_pt = 20.0 + 40.0 * rng.sample::<f64, _>(Exp1);
            let jet_eta: f64 = rng.gen_range(-2.5..2.5);
            let jet_phi: f64 = rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI);
            let n = 4 + Poisson::new(jet_pt / 6.0)
                .map(|p| p.sample(rng) as usize)
                .unwrap_or(0);
            let weights: Vec<f64> = (0..n).map(|_| rng.sample::<f64, _>(Exp1).powi(2)).collect();
            let total: f64 = weights.iter().sum();
            for w in weights {
                let pt = 0.65 * jet_pt * w / total;
                if pt < cfg.pt_min {
                    continue;
                }
                let eta = jet_eta + 0.1 * normal(rng);
                let phi = jet_phi + 0.1 * normal(rng);
                primaries.push(charged(rng, vertex, momentum(pt, eta, phi)));
            }
        }
        for _ in 0..2 {
            let pt = 20.0 + 25.0 * rng.sample::<f64, _>(Exp1);
            let eta: f64 = rng.gen_range(-2.5..2.5);
            let phi: f64 = rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI);
            let q = if rng.gen::<bool>() { 1 } else { -1 };
            primaries.push(GenParticle {
                particle_type: signed_type(13, q),
                vertex,
                p: momentum(pt, eta, phi),
                q,
                mass: M_MUON,
            });
        }
    }
    secondaries.retain(|p| p.p[0].hypot(p.p[1]) >= cfg.pt_min);
    primaries.append(&mut secondaries);
    primaries
}
