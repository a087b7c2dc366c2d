//! Physics checks of the simulation on the real TrackML detector (small pile-up, fast).
mod common;

use std::collections::HashMap;

use common::{detector, tmp_dir};
use trackml::detector::ModuleKind;
use trackml::io::{self, Event};
use trackml::sim::helix::C_LIGHT;
use trackml::sim::{SimConfig, Simulator};

fn simulate(cfg: SimConfig, event_id: u64) -> Event {
    Simulator::new(detector(), cfg).unwrap().event(event_id)
}

fn small(mu: usize, seed: u64) -> SimConfig {
    SimConfig {
        mu,
        seed,
        ..SimConfig::default()
    }
}

/// Algebraic (Kasa) circle fit; returns the radius.
#[allow(clippy::needless_range_loop)]
fn circle_radius(points: &[(f64, f64)]) -> f64 {
    // Solve for (a, b, c) in x^2 + y^2 + a x + b y + c = 0 by least squares (3x3 normal equations).
    let mut m = [[0.0f64; 4]; 3];
    for &(x, y) in points {
        let row = [x, y, 1.0];
        let rhs = -(x * x + y * y);
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += row[i] * row[j];
            }
            m[i][3] += row[i] * rhs;
        }
    }
    for i in 0..3 {
        let p = (i..3)
            .max_by(|&a, &b| m[a][i].abs().total_cmp(&m[b][i].abs()))
            .unwrap();
        m.swap(i, p);
        for k in 0..3 {
            if k != i {
                let f = m[k][i] / m[i][i];
                for j in i..4 {
                    m[k][j] -= f * m[i][j];
                }
            }
        }
    }
    let (a, b, c) = (m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]);
    (a * a / 4.0 + b * b / 4.0 - c).sqrt()
}

#[test]
fn helix_radius_of_hits_matches_pt() {
    let cfg = small(20, 3);
    let bz = cfg.bz;
    let event = simulate(cfg, 0);
    let truth = event.truth.as_ref().unwrap();
    let mut points: HashMap<u64, Vec<(f64, f64)>> = HashMap::new();
    for (h, t) in event.hits.iter().zip(truth) {
        if t.particle_id != 0 {
            points.entry(t.particle_id).or_default().push((h.x, h.y));
        }
    }
    let mut ratios = Vec::new();
    for p in event.particles.as_ref().unwrap() {
        let Some(pts) = points.get(&p.particle_id) else {
            continue;
        };
        if p.pt() < 1.0 || p.pt() > 5.0 || pts.len() < 8 || p.vertex_r() > 1.0 {
            continue;
        }
        let expected = p.pt() / (C_LIGHT * bz) * 1000.0;
        ratios.push(circle_radius(pts) / expected);
    }
    assert!(ratios.len() >= 20, "only {} particles to fit", ratios.len());
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    // Smearing and scattering spread single fits; the median sits on pT / (0.3 B).
    assert!(
        (median - 1.0).abs() < 0.03,
        "median R_fit / R_pT = {median}"
    );
    let within = ratios.iter().filter(|r| (*r - 1.0).abs() < 0.15).count();
    assert!(
        within * 10 >= ratios.len() * 8,
        "{within} of {} within 15%",
        ratios.len()
    );
}

#[test]
fn spacepoints_lie_on_their_modules() {
    let det = detector();
    let cfg = small(10, 5);
    let segments = |k: ModuleKind| match k {
        ModuleKind::ShortStrip => cfg.short_strip_segments,
        _ => cfg.long_strip_segments,
    } as f64;
    let event = simulate(cfg.clone(), 1);
    let truth = event.truth.as_ref().unwrap();
    for (h, t) in event.hits.iter().zip(truth) {
        let m = det
            .module_index(h.volume_id, h.layer_id, h.module_id)
            .map(|i| &det.modules[i])
            .unwrap_or_else(|| panic!("hit {} on an unknown module", h.hit_id));
        let l = m.to_local([h.x, h.y, h.z]);
        assert!(
            l[2].abs() < 1e-6,
            "hit {} is {} mm off its module plane",
            h.hit_id,
            l[2]
        );
        assert!(
            m.contains(l[0], l[1], 1e-6),
            "hit {} outside its module {:?}: local {l:?}, hv {} hu {} {}",
            h.hit_id,
            (m.volume_id, m.layer_id, m.module_id),
            m.hv,
            m.min_hu,
            m.max_hu
        );
        if t.particle_id != 0 {
            let lt = m.to_local([t.tx, t.ty, t.tz]);
            assert!(lt[2].abs() < 1e-6 && m.contains(lt[0], lt[1], 1e-6));
            // The measurement is near the truth: pixels within their pitch, strip spacepoints
            // within a strip length along the strip and a few pitches across.
            let d = ((l[0] - lt[0]).powi(2) + (l[1] - lt[1]).powi(2)).sqrt();
            let limit = if m.kind().is_strip() {
                assert!(
                    (l[0] - lt[0]).abs() < 10.0 * m.pitch_u,
                    "hit {} across",
                    h.hit_id
                );
                2.0 * m.hv / segments(m.kind()) + cfg.pair_tolerance
            } else {
                1.0
            };
            assert!(d < limit, "hit {} is {d} mm from its truth", h.hit_id);
        }
    }
    // Every volume of the detector is populated.
    let mut volumes: Vec<u32> = event.hits.iter().map(|h| h.volume_id).collect();
    volumes.sort_unstable();
    volumes.dedup();
    assert_eq!(volumes, vec![7, 8, 9, 12, 13, 14, 16, 17, 18]);
}

#[test]
fn noise_fraction_and_size_follow_the_settings() {
    for f in [0.15, 0.3] {
        let cfg = SimConfig {
            noise_fraction: f,
            ..small(10, 7)
        };
        let e = simulate(cfg, 0);
        let noise = e
            .truth
            .as_ref()
            .unwrap()
            .iter()
            .filter(|t| t.particle_id == 0)
            .count();
        let frac = noise as f64 / e.hits.len() as f64;
        assert!((frac - f).abs() < 0.005, "noise fraction {frac}, asked {f}");
    }
    // Spacepoints grow linearly with pile-up: about 500 particle spacepoints per interaction.
    let signal = |mu: usize| -> f64 {
        (0..3)
            .map(|ev| {
                let cfg = SimConfig {
                    hard_scatter: false,
                    noise_fraction: 0.0,
                    ..small(mu, 11)
                };
                simulate(cfg, ev).hits.len() as f64
            })
            .sum::<f64>()
            / 3.0
    };
    let (a, b) = (signal(5), signal(20));
    let per = b / 20.0;
    assert!(
        (350.0..700.0).contains(&per),
        "{per} spacepoints per interaction"
    );
    assert!((b / a - 4.0).abs() < 1.2, "mu 20 / mu 5 = {}", b / a);
}

#[test]
fn particles_nhits_match_truth_and_ids_are_ordered() {
    let e = simulate(small(10, 9), 2);
    let mut count: HashMap<u64, u32> = HashMap::new();
    for t in e.truth.as_ref().unwrap() {
        if t.particle_id != 0 {
            *count.entry(t.particle_id).or_default() += 1;
        }
    }
    let particles = e.particles.as_ref().unwrap();
    for p in particles {
        assert_eq!(
            count.remove(&p.particle_id).unwrap_or(0),
            p.nhits,
            "particle {}",
            p.particle_id
        );
        assert!(p.q == 1 || p.q == -1);
    }
    assert!(
        count.is_empty(),
        "truth names particles missing from the particles file"
    );
    for (i, h) in e.hits.iter().enumerate() {
        assert_eq!(h.hit_id, i as u64 + 1);
    }
    let w: f64 = e.truth.as_ref().unwrap().iter().map(|t| t.weight).sum();
    assert!((w - 1.0).abs() < 1e-9);
    // Secondaries (displaced vertices) and both charges are there.
    assert!(particles.iter().any(|p| p.vertex_r() > 10.0));
    assert!(particles.iter().any(|p| p.q > 0) && particles.iter().any(|p| p.q < 0));
}

#[test]
fn strip_spacepoint_resolution_along_the_strip() {
    let det = detector();
    let cfg = small(100, 13);
    let alpha = cfg.stereo_angle;
    let e = simulate(cfg, 0);
    let truth = e.truth.as_ref().unwrap();
    let clusters: HashMap<u64, _> = e
        .spacepoints
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.hit_id, *c))
        .collect();
    let (mut across, mut along) = (Vec::new(), Vec::new());
    let mut sigma = 0.0;
    for (h, t) in e.hits.iter().zip(truth) {
        let m = &det.modules[det
            .module_index(h.volume_id, h.layer_id, h.module_id)
            .unwrap()];
        if m.kind() != ModuleKind::ShortStrip || h.volume_id != 13 || t.particle_id == 0 {
            continue;
        }
        assert!(
            clusters.contains_key(&h.hit_id),
            "strip spacepoint without clusters"
        );
        // Stiff tracks: spacepoint formation assumes a straight track from the beam spot.
        if t.tpx.hypot(t.tpy) < 3.0 {
            continue;
        }
        let l = m.to_local([h.x, h.y, h.z]);
        let lt = m.to_local([t.tx, t.ty, t.tz]);
        across.push(l[0] - lt[0]);
        along.push(l[1] - lt[1]);
        sigma = m.pitch_u / 12f64.sqrt();
    }
    assert!(along.len() >= 30, "only {} spacepoints", along.len());
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    // Both clusters contribute: sigma_v = sigma * sqrt(1 + cos^2) / sin(stereo).
    let expected = sigma * (1.0 + alpha.cos().powi(2)).sqrt() / alpha.sin();
    let got = rms(&along);
    assert!(
        got > 0.75 * expected && got < 1.35 * expected,
        "along {got} mm, expected {expected}"
    );
    assert!(
        rms(&across) < 2.0 * sigma,
        "across {} mm, sigma {sigma}",
        rms(&across)
    );
}

#[test]
fn ghosts_appear_where_strip_modules_are_busy() {
    let e = simulate(
        SimConfig {
            noise_fraction: 0.0,
            ..small(60, 17)
        },
        0,
    );
    let truth = e.truth.as_ref().unwrap();
    let ghosts = e
        .hits
        .iter()
        .zip(truth)
        .filter(|(h, t)| t.particle_id == 0 && h.volume_id >= 12)
        .count();
    let pixel_zero = e
        .hits
        .iter()
        .zip(truth)
        .filter(|(h, t)| t.particle_id == 0 && h.volume_id < 12)
        .count();
    assert!(ghosts > 0, "no ghost strip spacepoints at mu 60");
    assert_eq!(pixel_zero, 0, "pixels form no ghosts and noise is off");
}

#[test]
fn simulation_is_deterministic_across_thread_counts() {
    let run = |threads: usize, name: &str| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let dir = tmp_dir(name);
        pool.install(|| {
            let e = simulate(small(8, 21), 4);
            io::write_event(&dir, &e).unwrap();
        });
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|f| {
                let f = f.unwrap();
                (
                    f.file_name().to_string_lossy().into_owned(),
                    std::fs::read(f.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        std::fs::remove_dir_all(&dir).ok();
        files
    };
    let a = run(1, "det1");
    let b = run(2, "det2");
    assert_eq!(a.len(), 5);
    assert!(a == b, "files differ between 1 and 2 threads");
    let c = {
        let e = simulate(small(8, 22), 4);
        e.hits.len()
    };
    assert_ne!(c, 0);
    let d = simulate(small(8, 22), 4);
    assert_ne!(
        d.hits,
        simulate(small(8, 21), 4).hits,
        "another seed gives another event"
    );
}

#[test]
fn written_event_reads_back() {
    let e = simulate(small(5, 23), 9);
    let dir = tmp_dir("roundtrip");
    io::write_event(&dir, &e).unwrap();
    assert_eq!(io::list_events(&dir).unwrap(), vec![9]);
    let back = io::read_event(&dir, 9).unwrap();
    assert_eq!(back.hits.len(), e.hits.len());
    for (a, b) in back.hits.iter().zip(&e.hits) {
        assert_eq!(
            (a.hit_id, a.volume_id, a.layer_id, a.module_id),
            (b.hit_id, b.volume_id, b.layer_id, b.module_id)
        );
        assert!(
            (a.x - b.x).abs() <= 5e-5 && (a.y - b.y).abs() <= 5e-5 && (a.z - b.z).abs() <= 5e-5
        );
    }
    assert_eq!(
        back.particles.as_ref().unwrap().len(),
        e.particles.as_ref().unwrap().len()
    );
    assert_eq!(
        back.spacepoints.as_ref().unwrap().len(),
        e.spacepoints.as_ref().unwrap().len()
    );
    let ids: Vec<u64> = back.truth.unwrap().iter().map(|t| t.particle_id).collect();
    let orig: Vec<u64> = e.truth.unwrap().iter().map(|t| t.particle_id).collect();
    assert_eq!(ids, orig);
    std::fs::remove_dir_all(&dir).ok();
}
