//! Following a charged particle through the layers: helix between layers, module hits at each
//! layer crossed, then multiple scattering (Highland) and ionisation loss in the modules hit.
use rand::Rng;
use rand_distr::StandardNormal;

use super::helix::Helix;
use super::physics::GenParticle;
use super::SimConfig;
use crate::detector::{Detector, LayerShape};
use crate::geom::{add, cross, dot, norm, scale, unit, V3};

/// Radiation length of silicon (mm).
pub const X0_SILICON: f64 = 93.7;
/// Most probable ionisation loss of a minimum-ionising particle in silicon (GeV/mm).
const DEDX_SILICON: f64 = 0.000_388;
/// The tracker volume: particles stop at its boundary (calorimeters beyond).
pub const WORLD_R: f64 = 1100.0;
pub const WORLD_Z: f64 = 3100.0;

/// One module crossed by a particle: true position in the module mid-plane and momentum there.
#[derive(Clone, Copy, Debug)]
pub struct Crossing {
    pub module: u32,
    pub pos: V3,
    pub mom: V3,
}

/// Moves a charged particle from its production vertex through the detector.
pub fn propagate<R: Rng>(
    det: &Detector,
    cfg: &SimConfig,
    particle: &GenParticle,
    rng: &mut R,
    out: &mut Vec<Crossing>,
) {
    let (charge, mass) = (particle.q as f64, particle.mass);
    let t_min = 1e-6;
    let mut pos = particle.vertex;
    let mut mom = particle.p;
    let mut turned = 0.0;
    let mut last_layer = usize::MAX;
    let mut candidates = Vec::with_capacity(16);
    let mut found: Vec<(f64, u32)> = Vec::with_capacity(4);
    let start = out.len();
    for _ in 0..cfg.max_layer_crossings {
        let pt = mom[0].hypot(mom[1]);
        if pt < cfg.stop_pt || pos[0].hypot(pos[1]) > WORLD_R || pos[2].abs() > WORLD_Z {
            break;
        }
        let helix = Helix::new(pos, mom, charge, cfg.bz);
        let budget = (cfg.max_turns * 2.0 * std::f64::consts::PI - turned) / helix.kappa.abs();
        // The world boundary ends the search.
        let mut limit = budget;
        let [a, b] = helix.cylinder(WORLD_R, t_min);
        for t in [
            a,
            b,
            helix.plane_z(WORLD_Z, t_min),
            helix.plane_z(-WORLD_Z, t_min),
        ]
        .into_iter()
        .flatten()
        {
            limit = limit.min(t);
        }
        // Nearest layer reference surface within its extent.
        let mut next: Option<(f64, usize)> = None;
        let mut best = limit;
        for (li, layer) in det.layers.iter().enumerate() {
            let floor = if li == last_layer { 1.0 } else { t_min };
            let t = match layer.shape {
                LayerShape::Barrel => {
                    if !helix.reaches(layer.reference) {
                        continue;
                    }
                    helix.cylinder_in_z(layer.reference, layer.z_min, layer.z_max, floor)
                }
                // Cheap test on t first: only nearer crossings need the position.
                LayerShape::Endcap => helix.plane_z(layer.reference, floor).filter(|&t| {
                    t < best && {
                        let p = helix.at(t);
                        let r = p[0].hypot(p[1]);
                        r >= layer.r_min && r <= layer.r_max
                    }
                }),
            };
            if let Some(t) = t {
                if t < best {
                    best = t;
                    next = Some((t, li));
                }
            }
        }
        let Some((t_layer, li)) = next else { break };
        let layer = &det.layers[li];
        let p = helix.at(t_layer);
        let tan = helix.tangent(t_layer);
        let r = p[0].hypot(p[1]).max(1.0);
        let phi = p[1].atan2(p[0]);
        // Search window: how far the track moves while crossing the layer's depth.
        let reach = layer.depth + 3.0;
        let (dphi, db, b) = match layer.shape {
            LayerShape::Barrel => {
                let drdt = ((p[0] * tan[0] + p[1] * tan[1]) / r).abs().max(0.2);
                let side = reach * (1.0 - drdt * drdt).max(0.0).sqrt() / drdt;
                ((side + 2.0) / r, reach * helix.cot.abs() / drdt + 2.0, p[2])
            }
            LayerShape::Endcap => {
                let side = (reach / helix.cot.abs().max(0.05)).min(300.0);
                ((side + 2.0) / r, side + 2.0, r)
            }
        };
        layer.candidates(phi, dphi.min(std::f64::consts::PI), b, db, &mut candidates);
        found.clear();
        for &m in &candidates {
            let module = &det.modules[m as usize];
            let Some(t) = helix.plane(module.centre, module.w, t_layer) else {
                continue;
            };
            if t <= t_min || t >= limit || (t - t_layer).abs() > 400.0 {
                continue;
            }
            let l = module.to_local(helix.at(t));
            if module.contains(l[0], l[1], 0.0) {
                found.push((t, m));
            }
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Material of the modules hit, along the track.
        let dir = unit(tan);
        let mut x_over_x0 = 0.0;
        for &(t, m) in &found {
            let module = &det.modules[m as usize];
            out.push(Crossing {
                module: m,
                pos: helix.at(t),
                mom: helix.momentum(t),
            });
            let cos = dot(dir, module.w).abs().max(0.05);
            x_over_x0 += 2.0 * module.half_thickness / cos / X0_SILICON * cfg.material_scale;
        }
        turned += helix.kappa.abs() * t_layer;
        pos = p;
        mom = helix.momentum(t_layer);
        last_layer = li;
        if x_over_x0 > 0.0 {
            mom = interact(mom, mass, x_over_x0, rng);
            if out.len() - start > cfg.max_hits_per_particle {
                break;
            }
        }
    }
}

/// Multiple scattering by the Highland formula and a mean ionisation loss.
fn interact<R: Rng>(mom: V3, mass: f64, x_over_x0: f64, rng: &mut R) -> V3 {
    let p = norm(mom);
    let energy = (p * p + mass * mass).sqrt();
    let beta = p / energy;
    let theta0 = 0.0136 / (beta * p) * x_over_x0.sqrt() * (1.0 + 0.038 * x_over_x0.ln()).max(0.0);
    let dir = scale(mom, 1.0 / p);
    // Two axes perpendicular to the direction.
    let helper = if dir[2].abs() < 0.9 {
        [0.0, 0.0, 1.0]
    } else {
        [1.0, 0.0, 0.0]
    };
    let e1 = unit(cross(dir, helper));
    let e2 = cross(dir, e1);
    let a: f64 = rng.sample::<f64, _>(StandardNormal) * theta0;
    let b: f64 = rng.sample::<f64, _>(StandardNormal) * theta0;
    let new_dir = unit(add(dir, add(scale(e1, a), scale(e2, b))));
    let loss = DEDX_SILICON * x_over_x0 * X0_SILICON;
    let new_energy = (energy - loss).max(mass + 1e-6);
    let new_p = (new_energy * new_energy - mass * mass).sqrt();
    scale(new_dir, new_p)
}
