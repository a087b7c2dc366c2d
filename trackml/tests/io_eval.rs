//! Reading the real TrackML event, features, labels, and evaluation on hand-made cases.
mod common;

use common::{real_dir, tmp_dir};
use trackml::evaluate::{evaluate, truth_labels, EvalConfig};
use trackml::features::{lacks_strip_clusters, module_ids, node_features, NUM_FEATURES};
use trackml::io::{self, Event, Hit, Particle, TruthHit};

#[test]
fn real_event_reads_with_truth_and_features() {
    let dir = real_dir();
    assert_eq!(io::list_events(&dir).unwrap(), vec![1]);
    let e = io::read_event(&dir, 1).unwrap();
    assert_eq!(e.hits.len(), 5527);
    let truth = e.truth.as_ref().unwrap();
    assert!(truth.iter().zip(&e.hits).all(|(t, h)| t.hit_id == h.hit_id));
    assert_eq!(e.particles.as_ref().unwrap().len(), 548);
    assert!(e.spacepoints.is_none() && e.cells.as_ref().unwrap().len() > 5527);
    assert!(lacks_strip_clusters(&e));
    let x = node_features(&e);
    assert_eq!(x.len(), 5527 * NUM_FEATURES);
    for (i, h) in e.hits.iter().enumerate() {
        let row = &x[i * 9..i * 9 + 9];
        assert_eq!(row[0..3], row[3..6]);
        assert_eq!(row[0..3], row[6..9]);
        assert!((row[0] as f64 - h.x.hypot(h.y) / 1000.0).abs() < 1e-6);
    }
    let ids = module_ids(&e);
    assert_eq!(ids[0], 7 * 100_000_000 + 2 * 100_000 + 1);
    // The perfect track finder finds every target particle.
    let labels = truth_labels(&e, 3).unwrap();
    let m = evaluate(&e, &labels, &EvalConfig::default()).unwrap();
    assert!(m.target_particles > 20);
    assert_eq!(m.efficiency, 1.0);
    assert_eq!(m.double_majority_efficiency, 1.0);
    assert_eq!((m.fake_rate, m.duplicate_rate), (0.0, 0.0));
}

#[test]
fn strip_spacepoints_without_a_spacepoints_file_are_flagged() {
    // volume 8: pixel barrel, 13: short-strip barrel
    let hit = |hit_id, x: f64, volume_id| Hit {
        hit_id,
        x,
        y: 0.0,
        z: 0.0,
        volume_id,
        layer_id: 2,
        module_id: 1,
    };
    let mut e = Event::default();
    e.hits.push(hit(1, 32.0, 8));
    assert!(!lacks_strip_clusters(&e), "pixels have no clusters to miss");
    e.hits.push(hit(2, 260.0, 13));
    assert!(lacks_strip_clusters(&e));
    e.spacepoints = Some(Vec::new());
    assert!(!lacks_strip_clusters(&e));
}

#[test]
fn labels_round_trip_and_align_by_hit_id() {
    let dir = tmp_dir("labels");
    io::write_labels(&dir, 3, &[5, 2, 9], &[0, -1, 7]).unwrap();
    assert_eq!(
        io::read_labels(&dir, 3).unwrap(),
        vec![(5, 0), (2, -1), (9, 7)]
    );
    assert!(io::write_labels(&dir, 4, &[1, 2], &[0]).is_err());
    let mut e = Event::default();
    for id in [9, 5, 2, 11] {
        e.hits.push(Hit {
            hit_id: id,
            x: 1.0,
            y: 0.0,
            z: 0.0,
            volume_id: 8,
            layer_id: 2,
            module_id: 1,
        });
    }
    let rows = io::read_labels(&dir, 3).unwrap();
    assert_eq!(io::labels_for_hits(&e, &rows).unwrap(), vec![7, 0, -1, -1]);
    std::fs::remove_dir_all(&dir).ok();
}

/// An event with particles 1..=4 (10, 10, 6, 6 spacepoints, all targets) and 6 noise hits.
fn toy_event() -> Event {
    let mut e = Event::default();
    let mut truth = Vec::new();
    let mut add = |pid: u64, n: usize| {
        for _ in 0..n {
            let id = e.hits.len() as u64 + 1;
            e.hits.push(Hit {
                hit_id: id,
                x: 100.0,
                y: 0.0,
                z: 0.0,
                volume_id: 8,
                layer_id: 2,
                module_id: 1,
            });
            truth.push(TruthHit {
                hit_id: id,
                particle_id: pid,
                tx: 0.0,
                ty: 0.0,
                tz: 0.0,
                tpx: 0.0,
                tpy: 0.0,
                tpz: 0.0,
                weight: 0.0,
            });
        }
    };
    for (pid, n) in [(1, 10), (2, 10), (3, 6), (4, 6), (0, 6)] {
        add(pid, n);
    }
    e.truth = Some(truth);
    e.particles = Some(
        (1..=4)
            .map(|pid| Particle {
                particle_id: pid,
                particle_type: 211,
                vx: 0.0,
                vy: 0.0,
                // production vertices along the beam line; particle 4's outside the table
                vz: [-30.0, 10.0, 10.0, 250.0][pid as usize - 1],
                px: 2.0,
                py: 0.0,
                pz: 0.5,
                q: 1,
                nhits: 0,
            })
            .collect(),
    );
    e
}

#[test]
fn evaluation_of_split_merged_and_noise_tracks() {
    let e = toy_event();
    let cfg = EvalConfig::default();
    // Rows 0..10 particle 1, 10..20 particle 2, 20..26 particle 3, 26..32 particle 4, 32..38 noise.
    let mut labels = vec![-1i64; 38];
    // Particle 1 split in two halves: both pure, so both match; the second is a duplicate;
    // neither holds more than half of the particle (double majority fails).
    labels[0..5].fill(0);
    labels[5..10].fill(1);
    // Particle 2 found whole, plus two noise hits (10 of 12: still a match).
    labels[10..20].fill(2);
    labels[32..34].fill(2);
    // Particles 3 and 4 merged 6 + 6: no majority, a fake.
    labels[20..32].fill(3);
    // Pure noise: a fake. A two-hit candidate is ignored.
    labels[34..37].fill(4);
    labels[37] = 5;
    let m = evaluate(&e, &labels, &cfg).unwrap();
    assert_eq!(m.target_particles, 4);
    assert_eq!(m.candidates, 5);
    assert_eq!(m.matched_targets, 2);
    assert_eq!(m.matched_targets_double_majority, 1);
    assert_eq!(m.fake_candidates, 2);
    assert_eq!(m.duplicate_candidates, 1);
    assert_eq!(m.efficiency, 0.5);
    assert_eq!(m.fake_rate, 0.4);
    assert_eq!(m.duplicate_rate, 0.2);
    // pT 2.0 GeV falls into the [2, 3) bin; eta of pz/pT = 0.25 into [0, 0.5).
    let bin = m.efficiency_vs_pt.iter().find(|b| b.lo == 2.0).unwrap();
    assert_eq!((bin.particles, bin.matched), (4, 2));
    let bin = m.efficiency_vs_eta.iter().find(|b| b.lo == 0.0).unwrap();
    assert_eq!((bin.particles, bin.matched), (4, 2));
    // Vertex z: particle 1 (found) in [-50, -25), particles 2 (found) and 3 in [0, 25);
    // particle 4 at 250 mm is a target outside the table.
    let bin = m.efficiency_vs_vz.iter().find(|b| b.lo == -50.0).unwrap();
    assert_eq!((bin.particles, bin.matched), (1, 1));
    let bin = m.efficiency_vs_vz.iter().find(|b| b.lo == 0.0).unwrap();
    assert_eq!((bin.particles, bin.matched), (2, 1));
    let binned: u64 = m.efficiency_vs_vz.iter().map(|b| b.particles).sum();
    assert_eq!(binned, 3);
    // Raising the pT cut removes every target; min_hits 7 keeps particles 1 and 2.
    let high = EvalConfig {
        pt_min: 3.0,
        ..cfg.clone()
    };
    assert_eq!(evaluate(&e, &labels, &high).unwrap().target_particles, 0);
    let long = EvalConfig {
        min_hits: 7,
        ..cfg.clone()
    };
    let m = evaluate(&e, &labels, &long).unwrap();
    assert_eq!((m.target_particles, m.matched_targets), (2, 2));
    // Wrong label count is an error naming the sizes.
    let err = evaluate(&e, &labels[..10], &cfg).unwrap_err().to_string();
    assert!(err.contains("10 labels for 38 spacepoints"), "{err}");
}

#[test]
fn metrics_merge_adds_counts() {
    let e = toy_event();
    let cfg = EvalConfig::default();
    let labels = truth_labels(&e, 3).unwrap();
    let one = evaluate(&e, &labels, &cfg).unwrap();
    assert_eq!(
        (one.efficiency, one.fake_rate, one.candidates),
        (1.0, 0.0, 4)
    );
    let mut total = one.clone();
    total.merge(&one);
    assert_eq!(
        (total.events, total.target_particles, total.candidates),
        (2, 8, 8)
    );
    assert_eq!(total.efficiency, 1.0);
}
