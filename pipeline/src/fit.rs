//! Helix parameters of each track: a circle fit in the transverse plane (Taubin's algebraic fit,
//! solved by Newton's method on its characteristic polynomial) and a straight-line fit of z
//! against the transverse arc length from the point of closest approach to the beam line.
//!
//! Positions come from the features (`r = 1000 f0`, `phi = pi f1`, `z = 1000 f2`, mm); the
//! solenoid field is along z, so `pT [GeV] = 0.3 * B [T] * R [m]`.
use std::f64::consts::PI;

use rayon::prelude::*;

use crate::event::TrackParams;

/// Settings of the helix fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitConfig {
    /// Solenoid field in tesla.
    pub bfield: f64,
    /// Assumed transverse and longitudinal position errors (mm), for chi2 / ndf only.
    pub sigma_transverse: f64,
    pub sigma_z: f64,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            bfield: 2.0,
            sigma_transverse: 0.05,
            sigma_z: 0.5,
        }
    }
}

/// A circle `(x - cx)^2 + (y - cy)^2 = radius^2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Circle {
    pub cx: f64,
    pub cy: f64,
    pub radius: f64,
}

/// Taubin's fit of a circle through at least three points; `None` when they are (close to)
/// collinear, where the circle degenerates into a line.
pub fn fit_circle(x: &[f64], y: &[f64]) -> Option<Circle> {
    let n = x.len() as f64;
    if x.len() < 3 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxx, mut syy, mut sxy, mut sxz, mut syz, mut szz) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&xi, &yi) in x.iter().zip(y) {
        let (u, v) = (xi - mx, yi - my);
        let z = u * u + v * v;
        sxx += u * u;
        syy += v * v;
        sxy += u * v;
        sxz += u * z;
        syz += v * z;
        szz += z * z;
    }
    let (sxx, syy, sxy, sxz, syz, szz) = (sxx / n, syy / n, sxy / n, sxz / n, syz / n, szz / n);
    let mz = sxx + syy;
    let cov_xy = sxx * syy - sxy * sxy;
    let var_z = szz - mz * mz;
    // Characteristic polynomial a3 t^3 + a2 t^2 + a1 t + a0; its smallest root from t = 0.
    let a3 = 4.0 * mz;
    let a2 = -3.0 * mz * mz - szz;
    let a1 = var_z * mz + 4.0 * cov_xy * mz - sxz * sxz - syz * syz;
    let a0 = sxz * (sxz * syy - syz * sxy) + syz * (syz * sxx - sxz * sxy) - var_z * cov_xy;
    let (mut t, mut p) = (0.0f64, a0);
    for _ in 0..64 {
        let dp = a1 + t * (2.0 * a2 + 3.0 * a3 * t);
        let t_new = t - p / dp;
        if !t_new.is_finite() || t_new == t {
            break;
        }
        let p_new = a0 + t_new * (a1 + t_new * (a2 + t_new * a3));
        if p_new.abs() >= p.abs() {
            break;
        }
        t = t_new;
        p = p_new;
    }
    let det = t * t - t * mz + cov_xy;
    let ux = (sxz * (syy - t) - syz * sxy) / det / 2.0;
    let uy = (syz * (sxx - t) - sxz * sxy) / det / 2.0;
    let radius = (ux * ux + uy * uy + mz).sqrt();
    // A radius far beyond the spread of the points: collinear within rounding.
    let spread = mz.sqrt();
    if !radius.is_finite() || radius > 1e9 * spread.max(1e-12) {
        return None;
    }
    Some(Circle {
        cx: ux + mx,
        cy: uy + my,
        radius,
    })
}

/// Least-squares line `z = z0 + slope * s`; slope 0 when all `s` are equal.
fn fit_line(s: &[f64], z: &[f64]) -> (f64, f64) {
    let n = s.len() as f64;
    let (ms, mz) = (s.iter().sum::<f64>() / n, z.iter().sum::<f64>() / n);
    let (mut sss, mut ssz) = (0.0, 0.0);
    for (&si, &zi) in s.iter().zip(z) {
        sss += (si - ms) * (si - ms);
        ssz += (si - ms) * (zi - mz);
    }
    let slope = if sss > 0.0 { ssz / sss } else { 0.0 };
    (mz - slope * ms, slope)
}

/// Helix parameters in f64 (the track-quality features read these before any rounding).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Helix {
    /// GeV; +inf for a straight track.
    pub pt: f64,
    pub eta: f64,
    pub phi: f64,
    pub d0: f64,
    pub z0: f64,
    /// NaN with fewer than three spacepoints (no degree of freedom).
    pub chi2_ndf: f64,
    /// Largest absolute residuals (mm): transverse (to the circle) and in z (to the line).
    pub max_transverse_residual: f64,
    pub max_z_residual: f64,
}

/// The helix through spacepoints at positions in mm, in the order the particle crossed them
/// (by increasing radius); at least two.
pub fn helix(x: &[f64], y: &[f64], z: &[f64], cfg: &FitConfig) -> Option<Helix> {
    let n = x.len();
    if n < 2 {
        return None;
    }
    let (first, last) = (0, n - 1);
    let mut s = vec![0.0; n];
    let mut transverse_residual = vec![0.0; n];
    let (pt, phi, d0);
    match fit_circle(x, y) {
        Some(c) => {
            // Sense of rotation from the first to the last spacepoint: +1 anticlockwise.
            let cross = (x[first] - c.cx) * (y[last] - c.cy) - (y[first] - c.cy) * (x[last] - c.cx);
            let h = if cross >= 0.0 { 1.0 } else { -1.0 };
            let dc = c.cx.hypot(c.cy);
            // Point of closest approach: on the circle, on the line from its centre to the origin.
            let (px, py) = if dc > 0.0 {
                (c.cx * (1.0 - c.radius / dc), c.cy * (1.0 - c.radius / dc))
            } else {
                (x[first], y[first])
            };
            let (ux, uy) = ((px - c.cx) / c.radius, (py - c.cy) / c.radius);
            let (tx, ty) = (-h * uy, h * ux);
            phi = ty.atan2(tx);
            d0 = py * phi.cos() - px * phi.sin();
            pt = 0.3 * cfg.bfield * c.radius / 1000.0;
            for i in 0..n {
                let (vx, vy) = (x[i] - c.cx, y[i] - c.cy);
                let r = vx.hypot(vy);
                transverse_residual[i] = r - c.radius;
                let angle = (ux * vy - uy * vx).atan2(ux * vx + uy * vy);
                s[i] = h * angle * c.radius;
            }
        }
        None => {
            // Straight in the transverse plane: direction from the first to the last spacepoint.
            let (dx, dy) = (x[last] - x[first], y[last] - y[first]);
            phi = dy.atan2(dx);
            let (cp, sp) = (phi.cos(), phi.sin());
            d0 = y[first] * cp - x[first] * sp;
            pt = f64::INFINITY;
            for i in 0..n {
                s[i] = x[i] * cp + y[i] * sp;
                transverse_residual[i] = y[i] * cp - x[i] * sp - d0;
            }
        }
    }
    let (z0, cot_theta) = fit_line(&s, z);
    let (mut chi2, mut max_transverse_residual, mut max_z_residual) = (0.0, 0.0f64, 0.0f64);
    for i in 0..n {
        let rz = z[i] - (z0 + cot_theta * s[i]);
        chi2 +=
            (transverse_residual[i] / cfg.sigma_transverse).powi(2) + (rz / cfg.sigma_z).powi(2);
        max_transverse_residual = max_transverse_residual.max(transverse_residual[i].abs());
        max_z_residual = max_z_residual.max(rz.abs());
    }
    // Five helix parameters from two measurements per spacepoint.
    let ndf = 2 * n as i64 - 5;
    Some(Helix {
        max_transverse_residual,
        max_z_residual,
        pt,
        eta: cot_theta.asinh(),
        phi,
        d0,
        z0,
        chi2_ndf: if ndf > 0 { chi2 / ndf as f64 } else { f64::NAN },
    })
}

/// Helix parameters of one track from its spacepoints' positions (mm), in the order the
/// particle crossed them (by increasing radius).
pub fn fit_helix(x: &[f64], y: &[f64], z: &[f64], cfg: &FitConfig) -> TrackParams {
    let h = helix(x, y, z, cfg);
    let f = |v: Option<f64>| v.map_or(f32::NAN, |v| v as f32);
    TrackParams {
        label: -1,
        n_spacepoints: x.len(),
        pt: f(h.map(|h| h.pt)),
        eta: f(h.map(|h| h.eta)),
        phi: f(h.map(|h| h.phi)),
        d0: f(h.map(|h| h.d0)),
        z0: f(h.map(|h| h.z0)),
        chi2_ndf: f(h.map(|h| h.chi2_ndf)),
    }
}

/// The spacepoints of each track `0..num_tracks`, in index order.
pub fn members_by_track(labels: &[i64], num_tracks: usize) -> Vec<Vec<u32>> {
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); num_tracks];
    for (i, &l) in labels.iter().enumerate() {
        if l >= 0 {
            members[l as usize].push(i as u32);
        }
    }
    members
}

/// Sort a track's spacepoints into crossing order (by radius feature, then index) and return
/// their positions in mm from the feature rows (`r = 1000 f0`, `phi = pi f1`, `z = 1000 f2`).
pub fn crossing_positions(
    features: &[f32],
    num_features: usize,
    hits: &mut [u32],
) -> [Vec<f64>; 3] {
    let radius = |i: u32| features[i as usize * num_features];
    hits.sort_by(|&a, &b| radius(a).total_cmp(&radius(b)).then(a.cmp(&b)));
    let mut x = Vec::with_capacity(hits.len());
    let mut y = Vec::with_capacity(hits.len());
    let mut z = Vec::with_capacity(hits.len());
    for &i in hits.iter() {
        let row = &features[i as usize * num_features..];
        let (r, phi) = (1000.0 * row[0] as f64, PI * row[1] as f64);
        x.push(r * phi.cos());
        y.push(r * phi.sin());
        z.push(1000.0 * row[2] as f64);
    }
    [x, y, z]
}

/// Helix parameters of every track: `labels` as produced by track building, `features` the
/// event's `[N, num_features]` rows.
pub fn fit_tracks(
    features: &[f32],
    num_features: usize,
    labels: &[i64],
    num_tracks: usize,
    cfg: &FitConfig,
) -> Vec<TrackParams> {
    members_by_track(labels, num_tracks)
        .par_iter_mut()
        .enumerate()
        .map(|(label, hits)| {
            let [x, y, z] = crossing_positions(features, num_features, hits);
            let mut params = fit_helix(&x, &y, &z, cfg);
            params.label = label as i64;
            params
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    use super::*;

    /// A particle from its perigee: charge, pT (GeV), phi, eta, d0, z0 (mm).
    struct Helix {
        q: f64,
        pt: f64,
        phi: f64,
        eta: f64,
        d0: f64,
        z0: f64,
    }

    /// Spacepoints where the helix crosses the cylinders of radius `radii`, smeared.
    fn crossings(
        h: &Helix,
        radii: &[f64],
        sigma: (f64, f64),
        rng: &mut ChaCha8Rng,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let big_r = h.pt / (0.3 * 2.0) * 1000.0;
        let rot = -h.q; // positive particles turn clockwise in a field along +z
        let (nx, ny) = (-h.phi.sin(), h.phi.cos());
        let (px, py) = (h.d0 * nx, h.d0 * ny);
        let (cx, cy) = (px + rot * big_r * nx, py + rot * big_r * ny);
        let (ux, uy) = ((px - cx) / big_r, (py - cy) / big_r);
        let cot = h.eta.sinh();
        let (nt, nz) = (
            Normal::new(0.0, sigma.0).unwrap(),
            Normal::new(0.0, sigma.1).unwrap(),
        );
        let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
        let mut s = 0.0f64;
        for &target in radii {
            // March along the arc until the radius is reached, then bisect.
            let at = |s: f64| {
                let a = rot * s / big_r;
                let (vx, vy) = (ux * a.cos() - uy * a.sin(), ux * a.sin() + uy * a.cos());
                (cx + big_r * vx, cy + big_r * vy)
            };
            let rad = |s: f64| {
                let (a, b) = at(s);
                a.hypot(b)
            };
            while rad(s + 1.0) < target {
                s += 1.0;
            }
            let (mut lo, mut hi) = (s, s + 1.0);
            for _ in 0..60 {
                let mid = 0.5 * (lo + hi);
                if rad(mid) < target {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            s = lo;
            let (a, b) = at(s);
            // Smear along the transverse direction perpendicular to the radius.
            let (er, ephi) = (a / target, b / target);
            let d = nt.sample(rng);
            x.push(a - ephi * d);
            y.push(b + er * d);
            z.push(h.z0 + cot * s + nz.sample(rng));
        }
        (x, y, z)
    }

    const LAYERS: [f64; 10] = [
        32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0,
    ];

    #[test]
    fn exact_helix_points_give_back_the_parameters() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (q, pt, phi, eta, d0, z0) in [
            (1.0, 1.0, 0.3, 0.5, 0.2, 10.0),
            (-1.0, 2.5, -2.9, -1.2, -0.5, -40.0),
            (1.0, 0.6, 3.0, 2.0, 1.0, 0.0),
            (-1.0, 20.0, -0.1, 0.0, 0.02, 5.0),
        ] {
            let h = Helix {
                q,
                pt,
                phi,
                eta,
                d0,
                z0,
            };
            let (x, y, z) = crossings(&h, &LAYERS[..7], (0.0, 0.0), &mut rng);
            let p = fit_helix(&x, &y, &z, &FitConfig::default());
            assert!(
                ((p.pt as f64) - pt).abs() < 1e-4 * pt,
                "pt {} vs {pt}",
                p.pt
            );
            assert!(
                ((p.phi as f64) - phi).abs() < 1e-5,
                "phi {} vs {phi}",
                p.phi
            );
            assert!(
                ((p.eta as f64) - eta).abs() < 1e-5,
                "eta {} vs {eta}",
                p.eta
            );
            assert!(((p.d0 as f64) - d0).abs() < 1e-3, "d0 {} vs {d0}", p.d0);
            assert!(((p.z0 as f64) - z0).abs() < 1e-3, "z0 {} vs {z0}", p.z0);
            assert!(p.chi2_ndf < 1e-3, "{}", p.chi2_ndf);
        }
    }

    #[test]
    fn smeared_helices_are_fitted_within_resolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let cfg = FitConfig::default();
        let mut chi2 = Vec::new();
        for k in 0..200 {
            let pt = 1.0 + (k % 10) as f64;
            let h = Helix {
                q: if k % 2 == 0 { 1.0 } else { -1.0 },
                pt,
                phi: -3.0 + 0.03 * k as f64,
                eta: -1.5 + 0.015 * k as f64,
                d0: 0.05 * ((k % 7) as f64 - 3.0),
                z0: (k % 11) as f64 * 5.0 - 25.0,
            };
            let (x, y, z) = crossings(&h, &LAYERS, (cfg.sigma_transverse, cfg.sigma_z), &mut rng);
            let p = fit_helix(&x, &y, &z, &cfg);
            // ~10 points over 1 m at 50 um: pT to a few per mille per GeV, d0 to ~0.1 mm.
            assert!(
                ((p.pt as f64) - pt).abs() < 0.01 * pt * pt + 0.01,
                "pt {} vs {pt}",
                p.pt
            );
            assert!(
                ((p.phi as f64) - h.phi).abs() < 2e-3,
                "phi {} vs {}",
                p.phi,
                h.phi
            );
            assert!(
                ((p.eta as f64) - h.eta).abs() < 5e-3,
                "eta {} vs {}",
                p.eta,
                h.eta
            );
            assert!(
                ((p.d0 as f64) - h.d0).abs() < 0.3,
                "d0 {} vs {}",
                p.d0,
                h.d0
            );
            assert!(
                ((p.z0 as f64) - h.z0).abs() < 2.0,
                "z0 {} vs {}",
                p.z0,
                h.z0
            );
            chi2.push(p.chi2_ndf as f64);
        }
        // The assumed errors are the smearing: chi2 / ndf averages about 1.
        let mean = chi2.iter().sum::<f64>() / chi2.len() as f64;
        assert!((0.8..1.25).contains(&mean), "mean chi2/ndf {mean}");
    }

    #[test]
    fn straight_and_short_tracks() {
        // Collinear points: infinite pT, the line's direction and distance.
        let x = [10.0, 20.0, 30.0, 40.0];
        let y = [1.0, 1.0, 1.0, 1.0];
        let z = [1.0, 2.0, 3.0, 4.0];
        let p = fit_helix(&x, &y, &z, &FitConfig::default());
        assert!(p.pt.is_infinite() && p.phi.abs() < 1e-6 && (p.d0 - 1.0).abs() < 1e-6);
        assert!((p.z0 - 0.0).abs() < 1e-5 && (p.eta - 0.1f64.asinh() as f32).abs() < 1e-6);
        let p = fit_helix(&[1.0], &[1.0], &[1.0], &FitConfig::default());
        assert!(p.pt.is_nan() && p.n_spacepoints == 1);
    }

    #[test]
    fn fit_tracks_groups_spacepoints_by_label() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let h = Helix {
            q: -1.0,
            pt: 3.0,
            phi: 1.0,
            eta: 0.3,
            d0: 0.0,
            z0: 0.0,
        };
        let (x, y, z) = crossings(&h, &LAYERS, (0.0, 0.0), &mut rng);
        // Spacepoints in reverse order, interleaved with a noise spacepoint (label -1).
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in (0..x.len()).rev() {
            let (r, phi) = (x[i].hypot(y[i]), y[i].atan2(x[i]));
            let row = [
                (r / 1000.0) as f32,
                (phi / PI) as f32,
                (z[i] / 1000.0) as f32,
            ];
            features.extend_from_slice(&row);
            labels.push(0);
            features.extend_from_slice(&[0.5, 0.1, 0.0]);
            labels.push(-1);
        }
        let tracks = fit_tracks(&features, 3, &labels, 1, &FitConfig::default());
        assert_eq!(tracks.len(), 1);
        let p = tracks[0];
        assert_eq!((p.label, p.n_spacepoints), (0, 10));
        assert!(
            (p.pt - 3.0).abs() < 0.01 && (p.phi - 1.0).abs() < 1e-3,
            "{p:?}"
        );
    }
}
