//! Realism statistics of a set of events, to compare simulated with real TrackML events.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use crate::detector::Detector;
use crate::io::Event;

/// Mean spacepoints per particle in one bin of pT or eta.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileBin {
    pub lo: f64,
    pub hi: f64,
    pub particles: u64,
    pub mean_hits: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub events: usize,
    pub hits_per_event: f64,
    pub noise_fraction: f64,
    pub particles_per_event: f64,
    pub particles_with_hits_per_event: f64,
    pub hits_per_particle: f64,
    pub hits_per_particle_pt_above_1: f64,
    pub median_pt: f64,
    pub pt_90th_percentile: f64,
    pub fraction_pt_above_1: f64,
    pub fraction_abs_eta_below_2_5: f64,
    pub fraction_secondary: f64,
    pub targets_per_event: f64,
    /// Fraction of spacepoints per volume and per (volume, layer).
    pub volume_fractions: BTreeMap<u32, f64>,
    pub layer_fractions: BTreeMap<String, f64>,
    /// Noise fraction per volume.
    pub volume_noise: BTreeMap<u32, f64>,
    pub hits_vs_pt: Vec<ProfileBin>,
    pub hits_vs_eta: Vec<ProfileBin>,
    /// Distance of spacepoints from their module plane: RMS and 99th percentile (mm).
    pub plane_residual_rms: f64,
    pub plane_residual_p99: f64,
    /// Fraction of spacepoints outside their module's trapezoid by more than 10 um.
    pub fraction_outside_module: f64,
    pub hits_on_unknown_modules: u64,
}

const PT_EDGES: [f64; 9] = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 5.0, 100.0];

fn profile(edges: &[f64], pairs: &[(f64, u32)]) -> Vec<ProfileBin> {
    edges
        .windows(2)
        .map(|w| {
            let sel: Vec<u32> = pairs
                .iter()
                .filter(|(x, _)| *x >= w[0] && *x < w[1])
                .map(|p| p.1)
                .collect();
            let n = sel.len() as u64;
            ProfileBin {
                lo: w[0],
                hi: w[1],
                particles: n,
                mean_hits: if n > 0 {
                    sel.iter().map(|&h| h as f64).sum::<f64>() / n as f64
                } else {
                    0.0
                },
            }
        })
        .collect()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos - pos.floor());
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] * (1.0 - f) + sorted[j] * f
}

/// Statistics over `events`; particle quantities use particles that left spacepoints.
pub fn summarize(events: &[Event], det: &Detector) -> Summary {
    let mut s = Summary {
        events: events.len(),
        ..Summary::default()
    };
    if events.is_empty() {
        return s;
    }
    let (mut hits, mut noise, mut particles) = (0u64, 0u64, 0u64);
    let mut with_hits: Vec<(f64, f64, f64, u32)> = Vec::new(); // pt, eta, vertex r, nhits
    let mut per_volume: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut per_layer: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut residuals = Vec::new();
    let mut outside = 0u64;
    for e in events {
        hits += e.hits.len() as u64;
        let mut count: HashMap<u64, u32> = HashMap::new();
        for (i, h) in e.hits.iter().enumerate() {
            let pid = e.truth.as_ref().map_or(1, |t| t[i].particle_id);
            if pid == 0 {
                noise += 1;
            } else {
                *count.entry(pid).or_default() += 1;
            }
            let v = per_volume.entry(h.volume_id).or_default();
            v.0 += 1;
            v.1 += u64::from(pid == 0);
            *per_layer.entry((h.volume_id, h.layer_id)).or_default() += 1;
            match det.module_index(h.volume_id, h.layer_id, h.module_id) {
                Some(m) => {
                    let m = &det.modules[m];
                    let l = m.to_local([h.x, h.y, h.z]);
                    residuals.push(l[2].abs());
                    if m.outside_distance(l[0], l[1]) > 0.01 {
                        outside += 1;
                    }
                }
                None => s.hits_on_unknown_modules += 1,
            }
        }
        if let Some(ps) = &e.particles {
            particles += ps.len() as u64;
            for p in ps {
                if let Some(&n) = count.get(&p.particle_id) {
                    with_hits.push((p.pt(), p.eta(), p.vertex_r(), n));
                }
            }
        }
    }
    let ne = events.len() as f64;
    s.hits_per_event = hits as f64 / ne;
    s.noise_fraction = noise as f64 / hits.max(1) as f64;
    s.particles_per_event = particles as f64 / ne;
    s.particles_with_hits_per_event = with_hits.len() as f64 / ne;
    let np = with_hits.len().max(1) as f64;
    s.hits_per_particle = with_hits.iter().map(|p| p.3 as f64).sum::<f64>() / np;
    let high: Vec<_> = with_hits.iter().filter(|p| p.0 > 1.0).collect();
    s.hits_per_particle_pt_above_1 =
        high.iter().map(|p| p.3 as f64).sum::<f64>() / high.len().max(1) as f64;
    let mut pts: Vec<f64> = with_hits.iter().map(|p| p.0).collect();
    pts.sort_by(f64::total_cmp);
    s.median_pt = quantile(&pts, 0.5);
    s.pt_90th_percentile = quantile(&pts, 0.9);
    s.fraction_pt_above_1 = high.len() as f64 / np;
    s.fraction_abs_eta_below_2_5 = with_hits.iter().filter(|p| p.1.abs() < 2.5).count() as f64 / np;
    s.fraction_secondary = with_hits.iter().filter(|p| p.2 > 10.0).count() as f64 / np;
    s.targets_per_event = with_hits
        .iter()
        .filter(|p| p.0 > 1.0 && p.1.abs() < 4.0 && p.3 >= 5)
        .count() as f64
        / ne;
    for (v, (n, k)) in &per_volume {
        s.volume_fractions.insert(*v, *n as f64 / hits as f64);
        s.volume_noise.insert(*v, *k as f64 / *n as f64);
    }
    for ((v, l), n) in &per_layer {
        s.layer_fractions
            .insert(format!("{v}:{l}"), *n as f64 / hits as f64);
    }
    let pt_pairs: Vec<(f64, u32)> = with_hits.iter().map(|p| (p.0, p.3)).collect();
    let eta_pairs: Vec<(f64, u32)> = with_hits.iter().map(|p| (p.1, p.3)).collect();
    s.hits_vs_pt = profile(&PT_EDGES, &pt_pairs);
    let eta_edges: Vec<f64> = (0..=8).map(|i| -4.0 + i as f64).collect();
    s.hits_vs_eta = profile(&eta_edges, &eta_pairs);
    s.plane_residual_rms =
        (residuals.iter().map(|r| r * r).sum::<f64>() / residuals.len().max(1) as f64).sqrt();
    residuals.sort_by(f64::total_cmp);
    s.plane_residual_p99 = quantile(&residuals, 0.99);
    s.fraction_outside_module = outside as f64 / hits.max(1) as f64;
    s
}

/// A side-by-side text table of two summaries.
pub fn table(sim: &Summary, real: &Summary) -> String {
    let mut out = String::new();
    let mut row = |name: &str, a: f64, b: f64| {
        let _ = writeln!(out, "{name:<40} {a:>12.4} {b:>12.4}");
    };
    row("events", sim.events as f64, real.events as f64);
    row(
        "spacepoints per event",
        sim.hits_per_event,
        real.hits_per_event,
    );
    row("noise fraction", sim.noise_fraction, real.noise_fraction);
    row(
        "particles per event",
        sim.particles_per_event,
        real.particles_per_event,
    );
    row(
        "particles with hits per event",
        sim.particles_with_hits_per_event,
        real.particles_with_hits_per_event,
    );
    row(
        "spacepoints per particle",
        sim.hits_per_particle,
        real.hits_per_particle,
    );
    row(
        "spacepoints per particle, pT > 1 GeV",
        sim.hits_per_particle_pt_above_1,
        real.hits_per_particle_pt_above_1,
    );
    row("median pT (GeV)", sim.median_pt, real.median_pt);
    row(
        "90th percentile pT (GeV)",
        sim.pt_90th_percentile,
        real.pt_90th_percentile,
    );
    row(
        "fraction pT > 1 GeV",
        sim.fraction_pt_above_1,
        real.fraction_pt_above_1,
    );
    row(
        "fraction |eta| < 2.5",
        sim.fraction_abs_eta_below_2_5,
        real.fraction_abs_eta_below_2_5,
    );
    row(
        "fraction secondaries (vertex r > 10 mm)",
        sim.fraction_secondary,
        real.fraction_secondary,
    );
    row(
        "target particles per event",
        sim.targets_per_event,
        real.targets_per_event,
    );
    row(
        "module-plane residual RMS (mm)",
        sim.plane_residual_rms,
        real.plane_residual_rms,
    );
    row(
        "module-plane residual 99% (mm)",
        sim.plane_residual_p99,
        real.plane_residual_p99,
    );
    row(
        "fraction outside module trapezoid",
        sim.fraction_outside_module,
        real.fraction_outside_module,
    );
    row(
        "spacepoints on unknown modules",
        sim.hits_on_unknown_modules as f64,
        real.hits_on_unknown_modules as f64,
    );
    let volumes: std::collections::BTreeSet<u32> = sim
        .volume_fractions
        .keys()
        .chain(real.volume_fractions.keys())
        .copied()
        .collect();
    for v in volumes {
        let get = |s: &Summary| s.volume_fractions.get(&v).copied().unwrap_or(0.0);
        row(
            &format!("volume {v}: fraction of spacepoints"),
            get(sim),
            get(real),
        );
        let get = |s: &Summary| s.volume_noise.get(&v).copied().unwrap_or(0.0);
        row(&format!("volume {v}: noise fraction"), get(sim), get(real));
    }
    let layers: std::collections::BTreeSet<&String> = sim
        .layer_fractions
        .keys()
        .chain(real.layer_fractions.keys())
        .collect();
    for l in layers {
        let get = |s: &Summary| s.layer_fractions.get(l).copied().unwrap_or(0.0);
        row(
            &format!("layer {l}: fraction of spacepoints"),
            get(sim),
            get(real),
        );
    }
    for (a, b) in sim.hits_vs_pt.iter().zip(&real.hits_vs_pt) {
        row(
            &format!("spacepoints/particle, pT {}-{}", a.lo, a.hi),
            a.mean_hits,
            b.mean_hits,
        );
    }
    for (a, b) in sim.hits_vs_eta.iter().zip(&real.hits_vs_eta) {
        row(
            &format!("spacepoints/particle, eta {}..{}", a.lo, a.hi),
            a.mean_hits,
            b.mean_hits,
        );
    }
    format!("{:<40} {:>12} {:>12}\n{out}", "quantity", "sim", "real")
}
