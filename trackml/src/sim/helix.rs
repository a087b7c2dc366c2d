//! A charged particle's helix in a uniform solenoid field along z, parametrised by the
//! transverse path length `t` (mm) from its start point.
use std::f64::consts::PI;

use crate::geom::{dot, sub, V3};

/// GeV per (T m): pT = 0.2998 B R.
pub const C_LIGHT: f64 = 0.299_792_458;

#[derive(Clone, Copy, Debug)]
pub struct Helix {
    pub pos: V3,
    pub phi0: f64,
    /// pz / pT: dz per unit transverse length.
    pub cot: f64,
    /// Signed curvature (1/mm): the direction's azimuth grows by `kappa` per mm.
    pub kappa: f64,
    pub pt: f64,
    pub pz: f64,
    /// Centre of the transverse circle and its distance from the beam line.
    centre: [f64; 2],
    centre_r: f64,
}

impl Helix {
    /// `p` in GeV, `q` in units of e, `bz` in tesla.
    pub fn new(pos: V3, p: V3, q: f64, bz: f64) -> Helix {
        let pt = p[0].hypot(p[1]);
        let kappa = -q * C_LIGHT * bz / (1000.0 * pt);
        let phi0 = p[1].atan2(p[0]);
        let (s, c) = phi0.sin_cos();
        let centre = [pos[0] - s / kappa, pos[1] + c / kappa];
        Helix {
            pos,
            phi0,
            cot: p[2] / pt,
            kappa,
            pt,
            pz: p[2],
            centre,
            centre_r: centre[0].hypot(centre[1]),
        }
    }

    /// Radius of curvature (mm).
    pub fn radius(&self) -> f64 {
        1.0 / self.kappa.abs()
    }

    /// Whether the transverse circle reaches radius `r` at all.
    pub fn reaches(&self, r: f64) -> bool {
        let rho = self.radius();
        self.centre_r + rho >= r && (self.centre_r - rho).abs() <= r
    }

    /// Transverse length of one full turn.
    pub fn turn_length(&self) -> f64 {
        2.0 * PI / self.kappa.abs()
    }

    pub fn at(&self, t: f64) -> V3 {
        let half = 0.5 * self.kappa * t;
        // sin(kappa t / 2) / kappa, continuous at kappa t -> 0.
        let s = if half.abs() < 1e-9 {
            0.5 * t
        } else {
            half.sin() / self.kappa
        };
        let mid = self.phi0 + half;
        [
            self.pos[0] + 2.0 * s * mid.cos(),
            self.pos[1] + 2.0 * s * mid.sin(),
            self.pos[2] + self.cot * t,
        ]
    }

    /// Derivative of the position by t (not unit length).
    pub fn tangent(&self, t: f64) -> V3 {
        let phi = self.phi0 + self.kappa * t;
        [phi.cos(), phi.sin(), self.cot]
    }

    pub fn momentum(&self, t: f64) -> V3 {
        let phi = self.phi0 + self.kappa * t;
        [self.pt * phi.cos(), self.pt * phi.sin(), self.pz]
    }

    /// Path lengths t in (t_min, t_min + one turn] where the helix meets the cylinder r = `radius`.
    pub fn cylinder(&self, radius: f64, t_min: f64) -> [Option<f64>; 2] {
        let rho = self.radius();
        let centre = self.centre;
        let d = self.centre_r;
        if d < 1e-12 || d + rho < radius || (d - rho).abs() > radius {
            return [None, None];
        }
        // Distance from the origin, along the centre direction, of the chord through both points.
        let a = (radius * radius - (rho - d) * (rho + d)) / (2.0 * d);
        let h = (radius * radius - a * a).max(0.0).sqrt();
        let (ex, ey) = (centre[0] / d, centre[1] / d);
        let period = self.turn_length();
        let mut out = [None, None];
        for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
            let px = a * ex - sign * h * ey;
            let py = a * ey + sign * h * ex;
            // Direction azimuth at that point: (sin phi, -cos phi) = kappa (p - centre).
            let phi = (self.kappa * (px - centre[0])).atan2(-self.kappa * (py - centre[1]));
            let dphi = (phi - self.phi0) * self.kappa.signum();
            let mut t = dphi.rem_euclid(2.0 * PI) / self.kappa.abs();
            if t <= t_min {
                t += period;
            }
            out[k] = Some(t);
        }
        out
    }

    /// First t > t_min (allowing later turns) at which the helix meets r = `radius` with z in
    /// [z_lo, z_hi].
    pub fn cylinder_in_z(&self, radius: f64, z_lo: f64, z_hi: f64, t_min: f64) -> Option<f64> {
        let period = self.turn_length();
        let mut best: Option<f64> = None;
        for t in self.cylinder(radius, t_min).into_iter().flatten() {
            let z = self.pos[2] + self.cot * t;
            let k = if self.cot.abs() < 1e-12 {
                if (z_lo..=z_hi).contains(&z) {
                    0.0
                } else {
                    continue;
                }
            } else {
                let step = self.cot * period;
                let (a, b) = ((z_lo - z) / step, (z_hi - z) / step);
                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                let k = lo.ceil().max(0.0);
                if k > hi {
                    continue;
                }
                k
            };
            let tk = t + k * period;
            if best.is_none_or(|b| tk < b) {
                best = Some(tk);
            }
        }
        best
    }

    /// t > t_min at which the helix meets the plane z = `z`.
    pub fn plane_z(&self, z: f64, t_min: f64) -> Option<f64> {
        if self.cot.abs() < 1e-12 {
            return None;
        }
        let t = (z - self.pos[2]) / self.cot;
        (t > t_min).then_some(t)
    }

    /// Newton's method for the plane through `c` with normal `w`, started at `t0`.
    pub fn plane(&self, c: V3, w: V3, t0: f64) -> Option<f64> {
        let mut t = t0;
        for _ in 0..12 {
            let f = dot(sub(self.at(t), c), w);
            let df = dot(self.tangent(t), w);
            if df.abs() < 1e-9 {
                return None;
            }
            let dt = f / df;
            t -= dt;
            if dt.abs() < 1e-9 {
                return Some(t);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cylinder_crossing_lies_on_the_cylinder_and_circle_has_pt_radius() {
        let h = Helix::new([0.01, -0.02, 3.0], [0.8, -0.3, 0.5], -1.0, 2.0);
        let pt: f64 = 0.8f64.hypot(0.3);
        assert!((h.radius() - pt / (C_LIGHT * 2.0) * 1000.0).abs() < 1e-9);
        for r in [32.0, 172.0, 660.0] {
            let t = h.cylinder_in_z(r, -1e4, 1e4, 1e-6).unwrap();
            let p = h.at(t);
            assert!((p[0].hypot(p[1]) - r).abs() < 1e-6, "r {r}");
            // Numerical derivative agrees with the tangent.
            let e = 1e-5;
            let (a, b) = (h.at(t - e), h.at(t + e));
            let tan = h.tangent(t);
            for i in 0..3 {
                assert!(((b[i] - a[i]) / (2.0 * e) - tan[i]).abs() < 1e-6);
            }
        }
        // The helix never leaves the circle: r <= 2R from near the origin.
        assert!(h.cylinder(2.0 * h.radius() + 10.0, 1e-6)[0].is_none());
    }

    #[test]
    fn positive_charge_turns_clockwise() {
        let h = Helix::new([0.0; 3], [1.0, 0.0, 0.0], 1.0, 2.0);
        assert!(h.at(100.0)[1] < 0.0);
        let h = Helix::new([0.0; 3], [1.0, 0.0, 0.0], -1.0, 2.0);
        assert!(h.at(100.0)[1] > 0.0);
    }

    #[test]
    fn plane_intersection_converges() {
        let h = Helix::new([0.0; 3], [0.3, 0.4, 1.2], 1.0, 2.0);
        let c = [100.0, 150.0, 0.0];
        let w = [0.5f64.sqrt(), 0.5f64.sqrt(), 0.0];
        let t = h.plane(c, w, 150.0).unwrap();
        assert!(dot(sub(h.at(t), c), w).abs() < 1e-8);
    }
}
