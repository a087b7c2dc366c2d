//! Track-finding quality: efficiency, fake rate, duplicate rate (definitions in
//! docs/SIMULATION.md; `exatrkx.evaluate` computes the same numbers).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::Event;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalConfig {
    /// Target particles: pT above this (GeV).
    pub pt_min: f64,
    /// Target particles: |eta| below this.
    pub eta_max: f64,
    /// Target particles: at least this many spacepoints.
    pub min_hits: usize,
    /// Target particles: production vertex within this transverse distance of the beam line (mm).
    pub max_vertex_r: f64,
    /// Candidates with fewer spacepoints are ignored.
    pub min_track_hits: usize,
    /// A candidate matches a particle holding more than this fraction of its spacepoints.
    pub match_fraction: f64,
    /// Bin edges of the efficiency-vs-pT table (GeV): particles passing every cut but pT.
    pub pt_bins: Vec<f64>,
    /// Bin edges of the efficiency-vs-eta table: particles passing every cut but eta.
    pub eta_bins: Vec<f64>,
    /// Bin edges of the efficiency-vs-vertex-z table (mm): target particles by the z of their
    /// production vertex (the beam spot has sigma_z = 50 mm: pile-up vertices far from z = 0 are
    /// the hard ones for a pipeline that learnt tracks from the origin).
    #[serde(default = "default_vz_bins")]
    pub vz_bins: Vec<f64>,
}

fn default_vz_bins() -> Vec<f64> {
    (0..=16).map(|i| -200.0 + 25.0 * i as f64).collect()
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            pt_min: 1.0,
            eta_max: 4.0,
            min_hits: 5,
            max_vertex_r: 10.0,
            min_track_hits: 3,
            match_fraction: 0.5,
            pt_bins: vec![
                0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 100.0,
            ],
            eta_bins: (0..=16).map(|i| -4.0 + 0.5 * i as f64).collect(),
            vz_bins: default_vz_bins(),
        }
    }
}

/// Particles and matched particles in one bin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub particles: u64,
    pub matched: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub events: u64,
    pub target_particles: u64,
    pub matched_targets: u64,
    pub matched_targets_double_majority: u64,
    pub candidates: u64,
    pub fake_candidates: u64,
    pub duplicate_candidates: u64,
    pub efficiency: f64,
    pub double_majority_efficiency: f64,
    pub fake_rate: f64,
    pub duplicate_rate: f64,
    pub efficiency_vs_pt: Vec<Bin>,
    pub efficiency_vs_eta: Vec<Bin>,
    #[serde(default)]
    pub efficiency_vs_vz: Vec<Bin>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn bins(edges: &[f64]) -> Vec<Bin> {
    edges
        .windows(2)
        .map(|w| Bin {
            lo: w[0],
            hi: w[1],
            particles: 0,
            matched: 0,
        })
        .collect()
}

fn fill(bins: &mut [Bin], x: f64, matched: bool) {
    if let Some(b) = bins.iter_mut().find(|b| x >= b.lo && x < b.hi) {
        b.particles += 1;
        b.matched += u64::from(matched);
    }
}

impl Metrics {
    pub fn empty(cfg: &EvalConfig) -> Metrics {
        Metrics {
            events: 0,
            target_particles: 0,
            matched_targets: 0,
            matched_targets_double_majority: 0,
            candidates: 0,
            fake_candidates: 0,
            duplicate_candidates: 0,
            efficiency: 0.0,
            double_majority_efficiency: 0.0,
            fake_rate: 0.0,
            duplicate_rate: 0.0,
            efficiency_vs_pt: bins(&cfg.pt_bins),
            efficiency_vs_eta: bins(&cfg.eta_bins),
            efficiency_vs_vz: bins(&cfg.vz_bins),
        }
    }

    /// The efficiency tables by the name of their variable (`efficiency_vs_{name}`).
    pub fn tables(&self) -> [(&'static str, &[Bin]); 3] {
        [
            ("pt", &self.efficiency_vs_pt),
            ("eta", &self.efficiency_vs_eta),
            ("vz", &self.efficiency_vs_vz),
        ]
    }

    /// Adds another event's counts (same binning) and recomputes the rates.
    pub fn merge(&mut self, other: &Metrics) {
        self.events += other.events;
        self.target_particles += other.target_particles;
        self.matched_targets += other.matched_targets;
        self.matched_targets_double_majority += other.matched_targets_double_majority;
        self.candidates += other.candidates;
        self.fake_candidates += other.fake_candidates;
        self.duplicate_candidates += other.duplicate_candidates;
        for (a, b) in self
            .efficiency_vs_pt
            .iter_mut()
            .chain(self.efficiency_vs_eta.iter_mut())
            .chain(self.efficiency_vs_vz.iter_mut())
            .zip(
                other
                    .efficiency_vs_pt
                    .iter()
                    .chain(&other.efficiency_vs_eta)
                    .chain(&other.efficiency_vs_vz),
            )
        {
            a.particles += b.particles;
            a.matched += b.matched;
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.efficiency = ratio(self.matched_targets, self.target_particles);
        self.double_majority_efficiency =
            ratio(self.matched_targets_double_majority, self.target_particles);
        self.fake_rate = ratio(self.fake_candidates, self.candidates);
        self.duplicate_rate = ratio(self.duplicate_candidates, self.candidates);
    }
}

/// Scores one event's labels (one per spacepoint, in hits order, -1 = no track).
pub fn evaluate(event: &Event, labels: &[i64], cfg: &EvalConfig) -> Result<Metrics> {
    let truth = event.truth.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "event {}: evaluation needs the truth file",
            event.event_id
        ))
    })?;
    let particles = event.particles.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "event {}: evaluation needs the particles file",
            event.event_id
        ))
    })?;
    if labels.len() != event.hits.len() {
        return Err(Error::Invalid(format!(
            "event {}: {} labels for {} spacepoints",
            event.event_id,
            labels.len(),
            event.hits.len()
        )));
    }
    // Spacepoints per particle, counted from the truth file.
    let mut nhits: HashMap<u64, usize> = HashMap::new();
    for t in truth.iter().filter(|t| t.particle_id != 0) {
        *nhits.entry(t.particle_id).or_default() += 1;
    }
    // Candidates: spacepoints grouped by label.
    let mut tracks: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        if l >= 0 {
            tracks.entry(l).or_default().push(i);
        }
    }
    let mut labels_sorted: Vec<i64> = tracks.keys().copied().collect();
    labels_sorted.sort_unstable();
    let mut matches: HashMap<u64, (u64, bool)> = HashMap::new();
    let mut m = Metrics::empty(cfg);
    m.events = 1;
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for label in labels_sorted {
        let members = &tracks[&label];
        if members.len() < cfg.min_track_hits {
            continue;
        }
        m.candidates += 1;
        counts.clear();
        for &i in members {
            *counts.entry(truth[i].particle_id).or_default() += 1;
        }
        // Majority particle (noise excluded); ties go to the smaller id.
        let best = counts
            .iter()
            .filter(|(&p, _)| p != 0)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
        let matched = best.filter(|(_, &n)| n as f64 > cfg.match_fraction * members.len() as f64);
        match matched {
            None => m.fake_candidates += 1,
            Some((&pid, &n)) => {
                let double = n as f64 > cfg.match_fraction * nhits[&pid] as f64;
                let entry = matches.entry(pid).or_insert((0, false));
                if entry.0 > 0 {
                    m.duplicate_candidates += 1;
                }
                entry.0 += 1;
                entry.1 |= double;
            }
        }
    }
    for p in particles {
        let n = nhits.get(&p.particle_id).copied().unwrap_or(0);
        let (pt, eta) = (p.pt(), p.eta());
        let base = n >= cfg.min_hits && p.vertex_r() < cfg.max_vertex_r;
        let in_pt = pt > cfg.pt_min;
        let in_eta = eta.abs() < cfg.eta_max;
        let (found, double) = matches
            .get(&p.particle_id)
            .map_or((false, false), |&(k, d)| (k > 0, d));
        if base && in_eta {
            fill(&mut m.efficiency_vs_pt, pt, found);
        }
        if base && in_pt {
            fill(&mut m.efficiency_vs_eta, eta, found);
        }
        if base && in_pt && in_eta {
            fill(&mut m.efficiency_vs_vz, p.vz, found);
            m.target_particles += 1;
            m.matched_targets += u64::from(found);
            m.matched_targets_double_majority += u64::from(double);
        }
    }
    m.finish();
    Ok(m)
}

/// One label per spacepoint from the truth: each particle with >= `min_hits` spacepoints is a
/// track, the rest -1. The perfect track finder, for tests and reference numbers.
pub fn truth_labels(event: &Event, min_hits: usize) -> Result<Vec<i64>> {
    let truth = event
        .truth
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("event {}: no truth", event.event_id)))?;
    let mut count: HashMap<u64, usize> = HashMap::new();
    for t in truth.iter().filter(|t| t.particle_id != 0) {
        *count.entry(t.particle_id).or_default() += 1;
    }
    let mut ids: HashMap<u64, i64> = HashMap::new();
    Ok(truth
        .iter()
        .map(|t| {
            if t.particle_id == 0 || count[&t.particle_id] < min_hits {
                -1
            } else {
                let next = ids.len() as i64;
                *ids.entry(t.particle_id).or_insert(next)
            }
        })
        .collect())
}
