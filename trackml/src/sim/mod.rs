//! TrackML-like event simulation on the real TrackML detector: pile-up interactions, helix
//! propagation with multiple scattering, pixel clusters, strip stereo spacepoints with ghosts,
//! noise, written as TrackML CSV tables.
pub mod helix;
pub mod physics;
pub mod propagate;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::detector::{Detector, Module, ModuleKind};
use crate::error::{Error, Result};
use crate::geom::{add, V3};
use crate::io::{Cell, Event, Hit, Particle, StripClusters, TruthHit};
use physics::{GenParticle, Spectrum};
use propagate::Crossing;

/// Simulation settings; `Default` gives TrackML-like events (mu = 200 about 120k spacepoints).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Pile-up interactions per event (a hard scatter comes on top).
    pub mu: usize,
    pub seed: u64,
    /// Fraction of all spacepoints that belong to no particle (noise plus strip ghosts).
    pub noise_fraction: f64,
    /// Whether each event has a hard-scatter (top-pair-like) interaction.
    pub hard_scatter: bool,
    /// Solenoid field (T).
    pub bz: f64,
    pub beam_sigma_xy: f64,
    pub beam_sigma_z: f64,
    /// Mean charged primaries (pT > pt_min, |eta| < eta_max) per minimum-bias interaction.
    pub charged_per_interaction: f64,
    /// Negative-binomial shape of the multiplicity.
    pub nbd_k: f64,
    /// Scales the K0s, Lambda and photon yields that produce secondaries.
    pub secondary_scale: f64,
    pub eta_max: f64,
    /// dN/deta is flat up to this |eta| and falls exponentially (length `eta_tail`) beyond.
    pub eta_plateau: f64,
    pub eta_tail: f64,
    pub pt_min: f64,
    pub tsallis_temperature: f64,
    pub tsallis_n: f64,
    /// Module material in units of the silicon thickness (supports, services).
    pub material_scale: f64,
    /// Particles are followed for at most this many revolutions (loopers).
    pub max_turns: f64,
    /// Particles below this pT (GeV) are stopped.
    pub stop_pt: f64,
    pub max_layer_crossings: usize,
    pub max_hits_per_particle: usize,
    pub pixel_efficiency: f64,
    /// Efficiency of one strip cluster (a spacepoint needs both).
    pub strip_efficiency: f64,
    /// Stereo angle of the second strip layer (rad).
    pub stereo_angle: f64,
    /// Depth of the stereo layer behind the module mid-plane (mm).
    pub stereo_gap: f64,
    /// Strip segments along a module: short strips and long strips.
    pub short_strip_segments: u32,
    pub long_strip_segments: u32,
    /// Slack when testing that a stereo pair's crossing lies on both strips (mm).
    pub pair_tolerance: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mu: 200,
            seed: 1,
            noise_fraction: 0.15,
            hard_scatter: true,
            bz: 2.0,
            beam_sigma_xy: 0.015,
            beam_sigma_z: 50.0,
            charged_per_interaction: 36.5,
            nbd_k: 2.0,
            secondary_scale: 2.0,
            eta_max: 4.0,
            eta_plateau: 2.5,
            eta_tail: 1.6,
            pt_min: 0.1,
            tsallis_temperature: 0.19,
            tsallis_n: 7.0,
            material_scale: 3.0,
            max_turns: 0.75,
            stop_pt: 0.05,
            max_layer_crossings: 64,
            max_hits_per_particle: 40,
            pixel_efficiency: 0.96,
            strip_efficiency: 0.965,
            stereo_angle: 0.04,
            stereo_gap: 0.3,
            short_strip_segments: 4,
            long_strip_segments: 2,
            pair_tolerance: 1.0,
        }
    }
}

impl SimConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Invalid(format!("simulation setting {what}")));
        if !(0.0..1.0).contains(&self.noise_fraction) {
            return bad("noise_fraction must lie in [0, 1)");
        }
        if !positive(self.bz) {
            return bad("bz must be > 0");
        }
        if !positive(self.pt_min) || !positive(self.eta_max) || !positive(self.eta_tail) {
            return bad("pt_min, eta_max and eta_tail must be > 0");
        }
        if !(self.stereo_angle > 0.0 && self.stereo_angle < 1.5) {
            return bad("stereo_angle must lie in (0, 1.5) rad");
        }
        if !(0.0..=1.0).contains(&self.pixel_efficiency)
            || !(0.0..=1.0).contains(&self.strip_efficiency)
        {
            return bad("efficiencies must lie in [0, 1]");
        }
        if self.short_strip_segments == 0 || self.long_strip_segments == 0 {
            return bad("strip segments must be >= 1");
        }
        Ok(())
    }
}

/// False for NaN as for values <= 0.
fn positive(x: f64) -> bool {
    x > 0.0
}

/// SplitMix64 finaliser: independent seeds for (seed, event, stream).
fn mix(seed: u64, event: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(event.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A spacepoint before ids are given: measured position, truth, strip clusters.
#[derive(Clone, Copy, Debug)]
struct Sp {
    module: u32,
    pos: V3,
    /// Global particle index + 1; 0 = noise or ghost.
    particle: u32,
    true_pos: V3,
    true_mom: V3,
    clusters: Option<[V3; 2]>,
}

/// One strip cluster: `u` across the strips in the side's own frame, `vc` its strip centre.
#[derive(Clone, Copy, Debug)]
struct StripCluster {
    module: u32,
    side: u8,
    u: f64,
    vc: f64,
    particle: u32,
    true_pos: V3,
    true_mom: V3,
}

struct InteractionOutput {
    particles: Vec<GenParticle>,
    pixels: Vec<Sp>,
    strips: Vec<StripCluster>,
}

/// The simulator: the detector, the settings and the pT spectrum table.
pub struct Simulator<'a> {
    det: &'a Detector,
    cfg: SimConfig,
    spectrum: Spectrum,
}

/// Stereo frame: (u', v') = rotation of (u, v) by the stereo angle.
fn to_stereo(alpha: f64, u: f64, v: f64) -> (f64, f64) {
    let (s, c) = alpha.sin_cos();
    (c * u + s * v, -s * u + c * v)
}

fn from_stereo(alpha: f64, u2: f64, v2: f64) -> (f64, f64) {
    let (s, c) = alpha.sin_cos();
    (c * u2 - s * v2, s * u2 + c * v2)
}

impl<'a> Simulator<'a> {
    pub fn new(det: &'a Detector, cfg: SimConfig) -> Result<Self> {
        cfg.validate()?;
        let spectrum = Spectrum::tsallis(cfg.pt_min, 200.0, cfg.tsallis_temperature, cfg.tsallis_n);
        Ok(Simulator { det, cfg, spectrum })
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    fn strip_length(&self, m: &Module) -> f64 {
        let n = match m.kind() {
            ModuleKind::LongStrip => self.cfg.long_strip_segments,
            _ => self.cfg.short_strip_segments,
        };
        2.0 * m.hv / n as f64
    }

    /// Centre of the strip segment containing `v` on a module of half length hv.
    fn segment_centre(&self, m: &Module, v: f64) -> f64 {
        let l = self.strip_length(m);
        let n = (2.0 * m.hv / l).round();
        let k = ((v + m.hv) / l).floor().clamp(0.0, n - 1.0);
        -m.hv + (k + 0.5) * l
    }

    /// Turns a particle's module crossings into pixel spacepoints and strip clusters.
    fn measure<R: Rng>(
        &self,
        rng: &mut R,
        particle: u32,
        crossings: &[Crossing],
        out: &mut InteractionOutput,
    ) {
        let gauss = |rng: &mut R| rng.sample::<f64, _>(StandardNormal);
        let alpha = self.cfg.stereo_angle;
        for c in crossings {
            let m = &self.det.modules[c.module as usize];
            let l = m.to_local(c.pos);
            if !m.kind().is_strip() {
                if rng.gen::<f64>() >= self.cfg.pixel_efficiency {
                    continue;
                }
                let s12 = 12f64.sqrt();
                let v = (l[1] + gauss(rng) * m.pitch_v / s12).clamp(-m.hv, m.hv);
                let hu = m.half_width(v);
                let u = (l[0] + gauss(rng) * m.pitch_u / s12).clamp(-hu, hu);
                out.pixels.push(Sp {
                    module: c.module,
                    pos: m.to_global([u, v, 0.0]),
                    particle,
                    true_pos: c.pos,
                    true_mom: c.mom,
                    clusters: None,
                });
                continue;
            }
            let sigma = m.pitch_u / 12f64.sqrt();
            if rng.gen::<f64>() < self.cfg.strip_efficiency {
                out.strips.push(StripCluster {
                    module: c.module,
                    side: 0,
                    u: l[0] + gauss(rng) * sigma,
                    vc: self.segment_centre(m, l[1]),
                    particle,
                    true_pos: c.pos,
                    true_mom: c.mom,
                });
            }
            if rng.gen::<f64>() < self.cfg.strip_efficiency {
                // Where the particle crosses the stereo layer, a straight step behind.
                let d = m.to_local(add(m.centre, c.mom));
                let step = self.cfg.stereo_gap / d[2].abs().max(0.05) * d[2].signum();
                let (u2, v2) = to_stereo(alpha, l[0] + d[0] * step, l[1] + d[1] * step);
                out.strips.push(StripCluster {
                    module: c.module,
                    side: 1,
                    u: u2 + gauss(rng) * sigma,
                    vc: self.segment_centre(m, v2),
                    particle,
                    true_pos: c.pos,
                    true_mom: c.mom,
                });
            }
        }
    }

    fn interaction(&self, event_id: u64, index: usize) -> InteractionOutput {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, event_id, index as u64 + 1));
        let hard = self.cfg.hard_scatter && index == 0;
        let particles = physics::interaction(&mut rng, self.det, &self.cfg, &self.spectrum, hard);
        let mut out = InteractionOutput {
            particles: Vec::new(),
            pixels: Vec::new(),
            strips: Vec::new(),
        };
        let mut crossings = Vec::new();
        for (k, p) in particles.iter().enumerate() {
            crossings.clear();
            propagate::propagate(self.det, &self.cfg, p, &mut rng, &mut crossings);
            self.measure(&mut rng, k as u32, &crossings, &mut out);
        }
        out.particles = particles;
        out
    }

    /// Shift (du, dv) in the module plane between the mid-plane and the stereo layer, for a
    /// straight track from the beam spot centre: what spacepoint formation assumes.
    fn stereo_shift(&self, m: &Module, u: f64, v: f64) -> (f64, f64) {
        let dir = m.to_local(add(m.centre, m.to_global([u, v, 0.0])));
        let dw = if dir[2].abs() < 0.05 {
            0.05f64.copysign(dir[2])
        } else {
            dir[2]
        };
        (
            self.cfg.stereo_gap * dir[0] / dw,
            self.cfg.stereo_gap * dir[1] / dw,
        )
    }

    /// The stereo spacepoint of two clusters on one module, if their strips cross. The second
    /// strip is projected to the mid-plane along the direction from the beam spot.
    fn pair(&self, m: &Module, a: &StripCluster, b: &StripCluster) -> Option<Sp> {
        let alpha = self.cfg.stereo_angle;
        let (s, c) = alpha.sin_cos();
        let u = a.u;
        let (du, dv) = self.stereo_shift(m, a.u, a.vc);
        let shift = c * du + s * dv;
        let v = (b.u - shift - c * u) / s;
        let half = 0.5 * self.strip_length(m) + self.cfg.pair_tolerance;
        let (_, v2) = to_stereo(alpha, u + du, v + dv);
        if (v - a.vc).abs() > half
            || (v2 - b.vc).abs() > half
            || !m.contains(u, v, self.cfg.pair_tolerance)
        {
            return None;
        }
        let v = v.clamp(-m.hv, m.hv);
        let u = u.clamp(-m.half_width(v), m.half_width(v));
        let pos = m.to_global([u, v, 0.0]);
        let cl1 = m.to_global([a.u, a.vc, 0.0]);
        let (cu, cv) = from_stereo(alpha, b.u, b.vc);
        let cl2 = m.to_global([cu, cv, self.cfg.stereo_gap]);
        let same = a.particle == b.particle && a.particle != 0;
        Some(Sp {
            module: a.module,
            pos,
            particle: if same { a.particle } else { 0 },
            true_pos: if same { a.true_pos } else { pos },
            true_mom: if same { a.true_mom } else { [0.0; 3] },
            clusters: Some([cl1, cl2]),
        })
    }

    /// A noise spacepoint at a uniform position on a uniformly chosen module.
    fn noise<R: Rng>(&self, rng: &mut R) -> Sp {
        let mi = rng.gen_range(0..self.det.modules.len());
        let m = &self.det.modules[mi];
        let (u, v) = loop {
            let v = rng.gen_range(-m.hv..m.hv);
            let u = rng.gen_range(-m.max_hu.max(m.min_hu)..m.max_hu.max(m.min_hu));
            if m.contains(u, v, 0.0) {
                break (u, v);
            }
        };
        let pos = m.to_global([u, v, 0.0]);
        let clusters = m.kind().is_strip().then(|| {
            let (du, dv) = self.stereo_shift(m, u, v);
            let (u2, v2) = to_stereo(self.cfg.stereo_angle, u + du, v + dv);
            let (cu, cv) = from_stereo(self.cfg.stereo_angle, u2, self.segment_centre(m, v2));
            [
                m.to_global([u, self.segment_centre(m, v), 0.0]),
                m.to_global([cu, cv, self.cfg.stereo_gap]),
            ]
        });
        Sp {
            module: mi as u32,
            pos,
            particle: 0,
            true_pos: pos,
            true_mom: [0.0; 3],
            clusters,
        }
    }

    /// Simulates one event. Deterministic in (seed, event_id), whatever the thread count.
    pub fn event(&self, event_id: u64) -> Event {
        let n_interactions = self.cfg.mu + usize::from(self.cfg.hard_scatter);
        let outputs: Vec<InteractionOutput> = (0..n_interactions)
            .into_par_iter()
            .map(|i| self.interaction(event_id, i))
            .collect();
        // Global particle numbering: interactions in order; ids encode (interaction, index).
        let mut particles = Vec::new();
        let mut pixels = Vec::new();
        let mut strips = Vec::new();
        for (i, out) in outputs.into_iter().enumerate() {
            let offset = particles.len() as u32;
            for (k, p) in out.particles.iter().enumerate() {
                particles.push((((i as u64 + 1) << 32) | (k as u64 + 1), *p));
            }
            pixels.extend(out.pixels.into_iter().map(|mut s| {
                s.particle += offset + 1;
                s
            }));
            strips.extend(out.strips.into_iter().map(|mut c| {
                c.particle += offset + 1;
                c
            }));
        }
        let mut sps = pixels;
        // Pair the clusters of each strip module: true pairs and ghosts.
        strips.sort_by_key(|c| (c.module, c.side));
        let mut start = 0;
        while start < strips.len() {
            let module = strips[start].module;
            let end = start
                + strips[start..]
                    .iter()
                    .take_while(|c| c.module == module)
                    .count();
            let split = start
                + strips[start..end]
                    .iter()
                    .take_while(|c| c.side == 0)
                    .count();
            let m = &self.det.modules[module as usize];
            for a in &strips[start..split] {
                for b in &strips[split..end] {
                    if let Some(sp) = self.pair(m, a, b) {
                        sps.push(sp);
                    }
                }
            }
            start = end;
        }
        let n_true = sps.iter().filter(|s| s.particle != 0).count();
        let n_ghost = sps.len() - n_true;
        let f = self.cfg.noise_fraction;
        let wanted = (f / (1.0 - f) * n_true as f64).round() as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, event_id, 0));
        for _ in 0..wanted.saturating_sub(n_ghost) {
            let sp = self.noise(&mut rng);
            sps.push(sp);
        }
        // File order: by module, then position; hit ids from 1.
        sps.sort_by(|a, b| {
            a.module
                .cmp(&b.module)
                .then(a.pos[0].total_cmp(&b.pos[0]))
                .then(a.pos[1].total_cmp(&b.pos[1]))
                .then(a.pos[2].total_cmp(&b.pos[2]))
                .then(a.particle.cmp(&b.particle))
        });
        self.assemble(event_id, &particles, &sps)
    }

    fn assemble(&self, event_id: u64, particles: &[(u64, GenParticle)], sps: &[Sp]) -> Event {
        let mut nhits = vec![0u32; particles.len()];
        for s in sps {
            if s.particle != 0 {
                nhits[s.particle as usize - 1] += 1;
            }
        }
        // TrackML-like weights: by particle pT, zero for noise and particles with < 4 hits.
        let pweight: Vec<f64> = particles
            .iter()
            .zip(&nhits)
            .map(|((_, p), &n)| {
                let pt = p.p[0].hypot(p.p[1]);
                if n < 4 {
                    0.0
                } else {
                    (0.2 + 0.8 * (pt - 0.5) / 2.5).clamp(0.2, 1.0) / n as f64
                }
            })
            .collect();
        let total: f64 = sps
            .iter()
            .filter(|s| s.particle != 0)
            .map(|s| pweight[s.particle as usize - 1])
            .sum();
        let mut hits = Vec::with_capacity(sps.len());
        let mut truth = Vec::with_capacity(sps.len());
        let mut clusters = Vec::new();
        let mut cells = Vec::new();
        for (i, s) in sps.iter().enumerate() {
            let m = &self.det.modules[s.module as usize];
            let hit_id = i as u64 + 1;
            hits.push(Hit {
                hit_id,
                x: s.pos[0],
                y: s.pos[1],
                z: s.pos[2],
                volume_id: m.volume_id,
                layer_id: m.layer_id,
                module_id: m.module_id,
            });
            let (pid, w) = if s.particle == 0 {
                (0, 0.0)
            } else {
                let k = s.particle as usize - 1;
                (
                    particles[k].0,
                    if total > 0.0 { pweight[k] / total } else { 0.0 },
                )
            };
            truth.push(TruthHit {
                hit_id,
                particle_id: pid,
                tx: s.true_pos[0],
                ty: s.true_pos[1],
                tz: s.true_pos[2],
                tpx: s.true_mom[0],
                tpy: s.true_mom[1],
                tpz: s.true_mom[2],
                weight: w,
            });
            match s.clusters {
                Some([cl1, cl2]) => clusters.push(StripClusters { hit_id, cl1, cl2 }),
                None => pixel_cells(m, hit_id, s, &mut cells),
            }
        }
        let particles = particles
            .iter()
            .zip(nhits)
            .map(|((id, p), n)| Particle {
                particle_id: *id,
                particle_type: p.particle_type,
                vx: p.vertex[0],
                vy: p.vertex[1],
                vz: p.vertex[2],
                px: p.p[0],
                py: p.p[1],
                pz: p.p[2],
                q: p.q,
                nhits: n,
            })
            .collect();
        Event {
            event_id,
            hits,
            truth: Some(truth),
            particles: Some(particles),
            spacepoints: Some(clusters),
            cells: Some(cells),
        }
    }
}

/// The pixels a particle's path through the sensor crosses, charge shared by path length.
fn pixel_cells(m: &Module, hit_id: u64, s: &Sp, cells: &mut Vec<Cell>) {
    let l = m.to_local(s.pos);
    let channel = |u: f64, v: f64| {
        (
            ((u + m.max_hu.max(m.min_hu)) / m.pitch_u).floor() as i64,
            ((v + m.hv) / m.pitch_v).floor() as i64,
        )
    };
    let d = if s.particle == 0 {
        [0.0, 0.0, 1.0]
    } else {
        m.to_local(add(m.centre, s.true_mom))
    };
    let thickness = 2.0 * m.half_thickness;
    let dw = d[2].abs().max(1e-3);
    let (du, dv) = (d[0] / dw * thickness, d[1] / dw * thickness);
    let (a, b) = (
        channel(l[0] - 0.5 * du, l[1] - 0.5 * dv),
        channel(l[0] + 0.5 * du, l[1] + 0.5 * dv),
    );
    let steps = ((a.0 - b.0).abs().max((a.1 - b.1).abs()) as usize + 1).min(12);
    let path = (du * du + dv * dv + thickness * thickness).sqrt();
    let first = cells.len();
    for k in 0..steps {
        let f = if steps == 1 {
            0.5
        } else {
            k as f64 / (steps - 1) as f64
        };
        let ch = channel(l[0] + (f - 0.5) * du, l[1] + (f - 0.5) * dv);
        if !cells[first..].iter().any(|c| (c.ch0, c.ch1) == ch) {
            cells.push(Cell {
                hit_id,
                ch0: ch.0,
                ch1: ch.1,
                value: 0.0,
            });
        }
    }
    let n = (cells.len() - first) as f64;
    for c in &mut cells[first..] {
        c.value = 0.3 * path / n;
    }
}

/// Simulates one event with `cfg` on `det`.
pub fn simulate_event(det: &Detector, cfg: &SimConfig, event_id: u64) -> Result<Event> {
    Ok(Simulator::new(det, cfg.clone())?.event(event_id))
}
