//! Graph construction by module map (docs/DESIGN.md): hit pairs on module pairs crossed
//! consecutively by training particles, kept when they pass the pair's geometric windows.
//!
//! Hits are grouped by module once per event; then every map row whose two modules both hold
//! hits tests the hits of one against the hits of the other. Work grows with the pairs actually
//! tested, not with the square of the event.
use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::Path;

use rayon::prelude::*;

use crate::edges::orient_and_sort;
use crate::error::{PipelineError, Result};
use crate::stage::{edge_tensor, EventData, ExecutionContext, GraphConstruction};

const HEADER: [&str; 11] = [
    "module_a",
    "module_b",
    "count",
    "dphi_min",
    "dphi_max",
    "z0_min",
    "z0_max",
    "phislope_min",
    "phislope_max",
    "deta_min",
    "deta_max",
];

/// The windows of one ordered module pair, each `[min, max]` inclusive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairCuts {
    pub dphi: [f64; 2],
    pub z0: [f64; 2],
    pub phislope: [f64; 2],
    pub deta: [f64; 2],
}

/// The module map: rows sorted by `(module_a, module_b)`.
#[derive(Clone, Debug, Default)]
pub struct ModuleMap {
    rows: Vec<(i64, i64, PairCuts)>,
    /// Rows of each `module_a`.
    rows_of: HashMap<i64, (usize, usize)>,
}

extern "C" {
    // The C library's asinh (what numpy's reference uses through `math.asinh`), so that eta,
    // and with it an edge on a window's boundary, is the same bit for bit in both languages.
    #[link_name = "asinh"]
    fn c_asinh(x: f64) -> f64;
}

/// Cylindrical coordinates of a spacepoint recovered from its features, in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HitGeometry {
    pub r: f64,
    pub phi: f64,
    pub z: f64,
    pub eta: f64,
}

impl HitGeometry {
    pub fn from_features(row: &[f32]) -> Self {
        let r = 1000.0 * row[0] as f64;
        let phi = PI * row[1] as f64;
        let z = 1000.0 * row[2] as f64;
        // SAFETY: asinh is a pure function of the C math library.
        let eta = unsafe { c_asinh(z / r) };
        Self { r, phi, z, eta }
    }
}

/// `d` wrapped into [-pi, pi), for differences of two angles in [-pi, pi].
#[inline]
fn wrap_phi(d: f64) -> f64 {
    if d >= PI {
        d - 2.0 * PI
    } else if d < -PI {
        d + 2.0 * PI
    } else {
        d
    }
}

#[inline]
fn within(v: f64, w: [f64; 2]) -> bool {
    w[0] <= v && v <= w[1]
}

impl PairCuts {
    /// Does the pair (p on module a, q on module b) pass every window? Cheapest tests first.
    #[inline]
    pub fn accepts(&self, p: &HitGeometry, q: &HitGeometry) -> bool {
        let dphi = wrap_phi(q.phi - p.phi);
        if !within(dphi, self.dphi) || !within(q.eta - p.eta, self.deta) {
            return false;
        }
        let dr = q.r - p.r;
        if dr == 0.0 {
            return within(p.z, self.z0) && within(0.0, self.phislope);
        }
        within(p.z - p.r * (q.z - p.z) / dr, self.z0) && within(dphi / dr, self.phislope)
    }
}

impl ModuleMap {
    /// Read `module_map.csv` (errors name the file and line).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::ModelLoad {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| PipelineError::ModelLoad {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parse the CSV text of a module map.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or("empty file, expected a header")?;
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        if names != HEADER {
            return Err(format!(
                "header is '{header}', expected '{}'",
                HEADER.join(",")
            ));
        }
        let mut rows = Vec::new();
        for (no, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != HEADER.len() {
                return Err(format!(
                    "line {}: {} fields, expected {}",
                    no + 1,
                    fields.len(),
                    HEADER.len()
                ));
            }
            let module = |k: usize| {
                fields[k].parse::<i64>().map_err(|_| {
                    format!(
                        "line {}: {} = '{}' is not an integer",
                        no + 1,
                        HEADER[k],
                        fields[k]
                    )
                })
            };
            let value = |k: usize| {
                fields[k]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| !v.is_nan())
                    .ok_or_else(|| {
                        format!(
                            "line {}: {} = '{}' is not a number",
                            no + 1,
                            HEADER[k],
                            fields[k]
                        )
                    })
            };
            let window = |k: usize| -> std::result::Result<[f64; 2], String> {
                let w = [value(k)?, value(k + 1)?];
                if w[0] > w[1] {
                    return Err(format!(
                        "line {}: {} > {}",
                        no + 1,
                        HEADER[k],
                        HEADER[k + 1]
                    ));
                }
                Ok(w)
            };
            let cuts = PairCuts {
                dphi: window(3)?,
                z0: window(5)?,
                phislope: window(7)?,
                deta: window(9)?,
            };
            rows.push((module(0)?, module(1)?, cuts));
        }
        Ok(Self::from_rows(rows))
    }

    /// A map from `(module_a, module_b, cuts)` rows; a repeated pair keeps its first row.
    pub fn from_rows(mut rows: Vec<(i64, i64, PairCuts)>) -> Self {
        rows.sort_by_key(|r| (r.0, r.1));
        rows.dedup_by_key(|r| (r.0, r.1));
        let mut rows_of = HashMap::new();
        let mut start = 0;
        while start < rows.len() {
            let a = rows[start].0;
            let end = start + rows[start..].partition_point(|r| r.0 == a);
            rows_of.insert(a, (start, end));
            start = end;
        }
        Self { rows, rows_of }
    }

    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Cuts of the ordered pair `(a, b)`, if the map connects them.
    pub fn cuts(&self, a: i64, b: i64) -> Option<&PairCuts> {
        let &(s, e) = self.rows_of.get(&a)?;
        let rows = &self.rows[s..e];
        rows.binary_search_by_key(&b, |r| r.1)
            .ok()
            .map(|k| &rows[k].2)
    }

    /// Spacepoint pairs `[p, q]` (p on `module_a`, q on `module_b`) that pass their row's cuts.
    /// The same unordered pair may come twice (from rows (a, b) and (b, a)).
    pub fn pairs(
        &self,
        features: &[f32],
        num_features: usize,
        module_ids: &[i64],
    ) -> Vec<[u32; 2]> {
        let geometry: Vec<HitGeometry> = features
            .par_chunks_exact(num_features)
            .map(HitGeometry::from_features)
            .collect();
        // Hits grouped by module.
        let mut order: Vec<u32> = (0..module_ids.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (module_ids[i as usize], i));
        let mut modules: Vec<(i64, usize, usize)> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let m = module_ids[order[start] as usize];
            let end = start + order[start..].partition_point(|&i| module_ids[i as usize] == m);
            modules.push((m, start, end));
            start = end;
        }
        let hits_of: HashMap<i64, (usize, usize)> =
            modules.iter().map(|&(m, s, e)| (m, (s, e))).collect();
        // Geometry in module order, so that the hits of a module are adjacent in memory.
        let grouped: Vec<HitGeometry> = order.iter().map(|&i| geometry[i as usize]).collect();

        modules
            .par_iter()
            .with_min_len(16)
            .map(|&(a, sa, ea)| {
                let mut pairs = Vec::new();
                let Some(&(first, last)) = self.rows_of.get(&a) else {
                    return pairs;
                };
                for (_, b, cuts) in &self.rows[first..last] {
                    let Some(&(sb, eb)) = hits_of.get(b) else {
                        continue;
                    };
                    for (gp, &p) in grouped[sa..ea].iter().zip(&order[sa..ea]) {
                        for (gq, &q) in grouped[sb..eb].iter().zip(&order[sb..eb]) {
                            if p != q && cuts.accepts(gp, gq) {
                                pairs.push([p, q]);
                            }
                        }
                    }
                }
                pairs
            })
            .flatten_iter()
            .collect()
    }
}

/// The module-map graph stage: needs the module id of every spacepoint, sets `edge_index`.
pub struct ModuleMapGraph {
    pub map: ModuleMap,
}

impl GraphConstruction for ModuleMapGraph {
    fn build(&self, ctx: &ExecutionContext, event: &mut EventData) -> Result<()> {
        let input = event.input;
        let ids = input.module_ids.ok_or_else(|| {
            PipelineError::Input(
                "graph_construction = module_map needs the module id of every spacepoint \
                 (input MODULE_ID)"
                    .into(),
            )
        })?;
        let pairs = self.map.pairs(input.features, input.num_features, ids);
        let index = orient_and_sort(&event.radius_key, &pairs);
        event.edge_index = edge_tensor(&index, ctx.torch_device(), "graph")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::edges::edge_pairs;

    fn cuts(dphi: f64, z0: f64, slope: f64, deta: f64) -> PairCuts {
        PairCuts {
            dphi: [-dphi, dphi],
            z0: [-z0, z0],
            phislope: [-slope, slope],
            deta: [-deta, deta],
        }
    }

    fn features(r: f64, phi: f64, z: f64) -> [f32; 3] {
        [(r / 1000.0) as f32, (phi / PI) as f32, (z / 1000.0) as f32]
    }

    #[test]
    fn cut_quantities_follow_the_definition() {
        let p = HitGeometry::from_features(&features(100.0, 3.1, 10.0));
        let q = HitGeometry::from_features(&features(150.0, -3.1, 30.0));
        // dphi wraps across +-pi: about +0.083, not -6.2.
        let dphi = wrap_phi(q.phi - p.phi);
        assert!((dphi - (2.0 * PI - 6.2)).abs() < 1e-5, "{dphi}");
        // z0 = z_p - r_p dz / dr = 10 - 100 * 20 / 50 = -30
        let mut c = cuts(0.1, 1e9, 1e9, 1e9);
        c.z0 = [-30.01, -29.99];
        assert!(c.accepts(&p, &q));
        c.z0 = [-29.99, 0.0];
        assert!(!c.accepts(&p, &q));
        // Inclusive windows: a window that is exactly the pair's value accepts it.
        let deta = q.eta - p.eta;
        let mut c = cuts(0.1, 1e9, 1e9, 1e9);
        c.deta = [deta, deta];
        assert!(c.accepts(&p, &q));
        // dr == 0: z0 = z_p and phislope = 0.
        let s = HitGeometry::from_features(&features(100.0, 3.0, 50.0));
        let mut c = cuts(0.2, 1e9, 0.0, 1e9);
        c.z0 = [p.z, p.z];
        assert!(c.accepts(&p, &s));
    }

    #[test]
    fn parse_rejects_bad_files_by_line() {
        let header = HEADER.join(",");
        let good = format!("{header}\n1,2,5,-0.1,0.1,-100,100,-0.001,0.001,-0.2,0.2\n");
        let map = ModuleMap::parse(&good).unwrap();
        assert_eq!(map.num_rows(), 1);
        assert!(map.cuts(1, 2).is_some() && map.cuts(2, 1).is_none());
        let err = ModuleMap::parse(&format!("{header}\n1,2,5,-0.1,0.1\n")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err =
            ModuleMap::parse(&format!("{header}\n1,2,5,0.1,-0.1,-1,1,-1,1,-1,1\n")).unwrap_err();
        assert!(err.contains("dphi_min"), "{err}");
        let err = ModuleMap::parse(&format!("{header}\nx,2,5,0,0,0,0,0,0,0,0\n")).unwrap_err();
        assert!(err.contains("module_a"), "{err}");
        assert!(ModuleMap::parse("a,b\n").unwrap_err().contains("header"));
    }

    /// Random event on a few barrel layers, random map rows: the grouped search equals an
    /// all-pairs application of the same cuts, after orientation and sorting.
    #[test]
    fn grouped_search_equals_all_pairs() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let layers = [50.0, 100.0, 150.0, 150.0, 200.0];
        let n_modules = 24i64;
        let n = 600;
        let mut feats = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let m = rng.gen_range(0..n_modules);
            let r = layers[(m % 5) as usize]
                + if i % 7 == 0 {
                    0.0
                } else {
                    rng.gen_range(-2.0..2.0)
                };
            let phi = rng.gen_range(-PI..PI);
            let z = rng.gen_range(-300.0..300.0);
            let f = features(r, phi, z);
            feats.extend_from_slice(&[f[0], f[1], f[2], f[0], f[1], f[2], f[0], f[1], f[2]]);
            ids.push(700_000_000 + m);
        }
        let mut rows = Vec::new();
        for a in 0..n_modules {
            for b in 0..n_modules {
                if rng.gen_bool(0.3) {
                    let mut c = cuts(
                        rng.gen_range(0.5..3.0),
                        rng.gen_range(100.0..600.0),
                        rng.gen_range(0.005..0.05),
                        rng.gen_range(0.5..3.0),
                    );
                    c.dphi[0] = -rng.gen_range(0.0..2.0);
                    rows.push((700_000_000 + a, 700_000_000 + b, c));
                }
            }
        }
        let map = ModuleMap::from_rows(rows);
        let radius: Vec<f32> = feats.chunks(9).map(|r| r[0]).collect();
        let index = orient_and_sort(&radius, &map.pairs(&feats, 9, &ids));
        let got: Vec<(i64, i64)> = edge_pairs(&index).collect();

        let geometry: Vec<HitGeometry> = feats.chunks(9).map(HitGeometry::from_features).collect();
        let mut expected = BTreeSet::new();
        for p in 0..n {
            for q in 0..n {
                if p == q {
                    continue;
                }
                if let Some(c) = map.cuts(ids[p], ids[q]) {
                    if c.accepts(&geometry[p], &geometry[q]) {
                        let (s, d) = if crate::edges::starts_at(&radius, p as u32, q as u32) {
                            (p, q)
                        } else {
                            (q, p)
                        };
                        expected.insert((s as i64, d as i64));
                    }
                }
            }
        }
        let expected: Vec<(i64, i64)> = expected.into_iter().collect();
        assert!(
            expected.len() > 500,
            "too few edges to be a test: {}",
            expected.len()
        );
        assert_eq!(got, expected);
    }
}
