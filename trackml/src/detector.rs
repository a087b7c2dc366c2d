//! The TrackML detector from `detectors.csv[.gz]`: every module with its frame and trapezoid,
//! grouped into layers with a (phi, z) or (phi, r) grid for fast lookup.
use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use crate::csv::Table;
use crate::error::{Error, Result};
use crate::geom::{add, cross, dot, scale, sub, unit, V3};

/// One sensor module: centre, local axes u, v, w in global coordinates, trapezoid and pitches.
#[derive(Clone, Debug)]
pub struct Module {
    pub volume_id: u32,
    pub layer_id: u32,
    pub module_id: u32,
    pub centre: V3,
    pub u: V3,
    pub v: V3,
    pub w: V3,
    /// Half thickness (mm).
    pub half_thickness: f64,
    /// Half width in u at v = -hv and at v = +hv.
    pub min_hu: f64,
    pub max_hu: f64,
    pub hv: f64,
    pub pitch_u: f64,
    pub pitch_v: f64,
    /// Index of the layer in `Detector::layers`.
    pub layer: usize,
}

impl Module {
    pub fn to_local(&self, p: V3) -> V3 {
        let d = sub(p, self.centre);
        [dot(d, self.u), dot(d, self.v), dot(d, self.w)]
    }
    pub fn to_global(&self, l: V3) -> V3 {
        add(
            self.centre,
            add(
                scale(self.u, l[0]),
                add(scale(self.v, l[1]), scale(self.w, l[2])),
            ),
        )
    }
    /// Half width in u at local v (the trapezoid widens from -hv to +hv).
    pub fn half_width(&self, v: f64) -> f64 {
        self.min_hu + (self.max_hu - self.min_hu) * (v + self.hv) / (2.0 * self.hv)
    }
    /// Whether local (u, v) lies inside the trapezoid, enlarged by `tol` on every side.
    pub fn contains(&self, u: f64, v: f64, tol: f64) -> bool {
        v.abs() <= self.hv + tol && u.abs() <= self.half_width(v.clamp(-self.hv, self.hv)) + tol
    }
    /// How far local (u, v) lies outside the trapezoid (0 inside), approximately in mm.
    pub fn outside_distance(&self, u: f64, v: f64) -> f64 {
        let dv = (v.abs() - self.hv).max(0.0);
        let du = (u.abs() - self.half_width(v.clamp(-self.hv, self.hv))).max(0.0);
        dv.hypot(du)
    }
    pub fn global_id(&self) -> i64 {
        self.volume_id as i64 * 100_000_000 + self.layer_id as i64 * 100_000 + self.module_id as i64
    }
    /// Detector technology by volume id.
    pub fn kind(&self) -> ModuleKind {
        ModuleKind::of_volume(self.volume_id)
    }
    pub fn area(&self) -> f64 {
        2.0 * self.hv * (self.min_hu + self.max_hu)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Pixel,
    ShortStrip,
    LongStrip,
}

impl ModuleKind {
    pub fn of_volume(volume_id: u32) -> ModuleKind {
        match volume_id {
            12..=14 => ModuleKind::ShortStrip,
            16..=18 => ModuleKind::LongStrip,
            _ => ModuleKind::Pixel,
        }
    }
    pub fn is_strip(self) -> bool {
        self != ModuleKind::Pixel
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerShape {
    /// Modules around a cylinder: the reference surface is r = `reference`.
    Barrel,
    /// Modules on a disk: the reference surface is z = `reference`.
    Endcap,
}

/// A layer: its reference surface, extent and a lookup grid of its modules.
#[derive(Clone, Debug)]
pub struct Layer {
    pub volume_id: u32,
    pub layer_id: u32,
    pub shape: LayerShape,
    /// Mean module-centre radius (barrel) or z (endcap).
    pub reference: f64,
    /// Module extent: radius and z of every module corner.
    pub r_min: f64,
    pub r_max: f64,
    pub z_min: f64,
    pub z_max: f64,
    /// Spread of the module centres around `reference` (staggering), mm.
    pub depth: f64,
    pub modules: Vec<usize>,
    grid: Grid,
}

/// Bins in phi times a second coordinate (z for barrels, r for endcaps), each with the modules
/// whose footprint (plus a margin) overlaps it, stored as one flat list.
#[derive(Clone, Debug)]
struct Grid {
    nphi: usize,
    nb: usize,
    b_min: f64,
    b_max: f64,
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Grid {
    fn phi_bin(&self, phi: f64) -> i64 {
        ((phi + PI) / (2.0 * PI) * self.nphi as f64).floor() as i64
    }
    fn b_bin(&self, b: f64) -> i64 {
        ((b - self.b_min) / (self.b_max - self.b_min) * self.nb as f64).floor() as i64
    }
}

impl Layer {
    /// Modules whose footprint overlaps the window phi +- dphi, b +- db (b = z or r).
    pub fn candidates(&self, phi: f64, dphi: f64, b: f64, db: f64, out: &mut Vec<u32>) {
        out.clear();
        let g = &self.grid;
        let nphi = g.nphi as i64;
        let p0 = g.phi_bin(phi - dphi);
        let p1 = g.phi_bin(phi + dphi).min(p0 + nphi - 1);
        let b0 = g.b_bin(b - db).max(0);
        let b1 = g.b_bin(b + db).min(g.nb as i64 - 1);
        if b0 > b1 {
            return;
        }
        for p in p0..=p1 {
            let p = p.rem_euclid(nphi) as usize;
            for bb in b0..=b1 {
                let cell = p * g.nb + bb as usize;
                let (a, e) = (g.offsets[cell] as usize, g.offsets[cell + 1] as usize);
                for &m in &g.items[a..e] {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Detector {
    pub modules: Vec<Module>,
    pub layers: Vec<Layer>,
    by_id: HashMap<(u32, u32, u32), usize>,
    pub path: PathBuf,
}

/// Margin added to module footprints in the grid (mm and rad-equivalent).
const GRID_MARGIN: f64 = 1.0;

impl Detector {
    /// The detector file: `$EXATRKX_TRACKML_DIR`, then `../shared/data/trackml` and
    /// `shared/data/trackml` relative to the current directory and its parents.
    pub fn default_path() -> Option<PathBuf> {
        let names = ["detectors.csv.gz", "detectors.csv"];
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os("EXATRKX_TRACKML_DIR") {
            dirs.push(PathBuf::from(d));
        }
        if let Ok(cwd) = std::env::current_dir() {
            for base in cwd.ancestors() {
                dirs.push(base.join("../shared/data/trackml"));
                dirs.push(base.join("shared/data/trackml"));
            }
        }
        // The checkout this crate was built from (tests, examples).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        dirs.push(root.join("../shared/data/trackml"));
        dirs.push(root.join("shared/data/trackml"));
        dirs.iter()
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find(|p| p.exists())
    }

    /// Loads the detector from `detectors.csv[.gz]`.
    pub fn load(path: &Path) -> Result<Detector> {
        let t = Table::read(path)?;
        let ids = |n| t.column::<u32>(n);
        let f = |n| t.column::<f64>(n);
        let (vol, lay, modid) = (ids("volume_id")?, ids("layer_id")?, ids("module_id")?);
        let (cx, cy, cz) = (f("cx")?, f("cy")?, f("cz")?);
        let rot: Vec<Vec<f64>> = [
            "rot_xu", "rot_xv", "rot_xw", "rot_yu", "rot_yv", "rot_yw", "rot_zu", "rot_zv",
            "rot_zw",
        ]
        .iter()
        .map(|n| f(n))
        .collect::<Result<_>>()?;
        let (mt, minhu, maxhu, hv) = (
            f("module_t")?,
            f("module_minhu")?,
            f("module_maxhu")?,
            f("module_hv")?,
        );
        let (pu, pv) = (f("pitch_u")?, f("pitch_v")?);
        let mut modules = Vec::with_capacity(t.rows());
        let mut layer_of: HashMap<(u32, u32), usize> = HashMap::new();
        let mut layer_keys = Vec::new();
        for i in 0..t.rows() {
            let key = (vol[i], lay[i]);
            let layer = *layer_of.entry(key).or_insert_with(|| {
                layer_keys.push(key);
                layer_keys.len() - 1
            });
            // The file rounds the rotations to six digits: make the frame orthonormal again so
            // that local and global coordinates convert both ways exactly (right-handed u, v, w).
            let u = unit([rot[0][i], rot[3][i], rot[6][i]]);
            let v_raw = [rot[1][i], rot[4][i], rot[7][i]];
            let v = unit(sub(v_raw, scale(u, dot(v_raw, u))));
            let w_raw = [rot[2][i], rot[5][i], rot[8][i]];
            let w = cross(u, v);
            let m = Module {
                volume_id: vol[i],
                layer_id: lay[i],
                module_id: modid[i],
                centre: [cx[i], cy[i], cz[i]],
                u,
                v,
                w,
                half_thickness: mt[i],
                min_hu: minhu[i],
                max_hu: maxhu[i],
                hv: hv[i],
                pitch_u: pu[i],
                pitch_v: pv[i],
                layer,
            };
            if hv[i] <= 0.0 || maxhu[i] <= 0.0 || dot(w_raw, w) < 0.999 {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    line: i + 2,
                    message:
                        "module with an empty trapezoid or axes that are not a right-handed frame"
                            .into(),
                });
            }
            modules.push(m);
        }
        if modules.is_empty() {
            return Err(Error::Invalid(format!("{}: no modules", path.display())));
        }
        let by_id = modules
            .iter()
            .enumerate()
            .map(|(i, m)| ((m.volume_id, m.layer_id, m.module_id), i))
            .collect();
        let layers = layer_keys
            .iter()
            .enumerate()
            .map(|(li, &(v, l))| build_layer(&modules, li, v, l))
            .collect();
        Ok(Detector {
            modules,
            layers,
            by_id,
            path: path.to_path_buf(),
        })
    }

    pub fn module_index(&self, volume_id: u32, layer_id: u32, module_id: u32) -> Option<usize> {
        self.by_id.get(&(volume_id, layer_id, module_id)).copied()
    }
}

/// The module outline sampled at corners and edge midpoints (global coordinates).
fn outline(m: &Module) -> [V3; 8] {
    let (a, b) = (m.min_hu, m.max_hu);
    let mid = 0.5 * (a + b);
    let pts = [
        [-a, -m.hv],
        [a, -m.hv],
        [-b, m.hv],
        [b, m.hv],
        [0.0, -m.hv],
        [0.0, m.hv],
        [-mid, 0.0],
        [mid, 0.0],
    ];
    pts.map(|[u, v]| m.to_global([u, v, 0.0]))
}

fn wrap(phi: f64) -> f64 {
    (phi + PI).rem_euclid(2.0 * PI) - PI
}

fn build_layer(modules: &[Module], li: usize, volume_id: u32, layer_id: u32) -> Layer {
    let members: Vec<usize> = (0..modules.len())
        .filter(|&i| modules[i].layer == li)
        .collect();
    // Barrel modules have their normal in the transverse plane, endcap modules along z.
    let barrel = members
        .iter()
        .filter(|&&i| modules[i].w[2].abs() < 0.5)
        .count()
        * 2
        > members.len();
    let shape = if barrel {
        LayerShape::Barrel
    } else {
        LayerShape::Endcap
    };
    let coord = |p: V3| match shape {
        LayerShape::Barrel => p[0].hypot(p[1]),
        LayerShape::Endcap => p[2],
    };
    let refs: Vec<f64> = members.iter().map(|&i| coord(modules[i].centre)).collect();
    let reference = refs.iter().sum::<f64>() / refs.len() as f64;
    let depth = refs
        .iter()
        .map(|r| (r - reference).abs())
        .fold(0.0, f64::max);
    let (mut r_min, mut r_max, mut z_min, mut z_max) = (f64::MAX, 0.0f64, f64::MAX, f64::MIN);
    // Footprint per module in (phi centre, phi half-span, b range).
    let mut feet = Vec::with_capacity(members.len());
    for &i in &members {
        let m = &modules[i];
        let pts = outline(m);
        let phic = m.centre[1].atan2(m.centre[0]);
        let (mut span, mut b0, mut b1) = (0.0f64, f64::MAX, f64::MIN);
        for p in pts {
            let r = p[0].hypot(p[1]);
            r_min = r_min.min(r);
            r_max = r_max.max(r);
            z_min = z_min.min(p[2]);
            z_max = z_max.max(p[2]);
            span = span.max(wrap(p[1].atan2(p[0]) - phic).abs());
            let b = match shape {
                LayerShape::Barrel => p[2],
                LayerShape::Endcap => r,
            };
            b0 = b0.min(b);
            b1 = b1.max(b);
        }
        feet.push((phic, span, b0, b1));
    }
    let (b_min, b_max) = match shape {
        LayerShape::Barrel => (z_min - GRID_MARGIN, z_max + GRID_MARGIN),
        LayerShape::Endcap => ((r_min - GRID_MARGIN).max(0.0), r_max + GRID_MARGIN),
    };
    let m0 = &modules[members[0]];
    let mean_r = match shape {
        LayerShape::Barrel => reference,
        LayerShape::Endcap => 0.5 * (r_min + r_max),
    };
    let nphi = ((2.0 * PI * mean_r / (m0.min_hu + m0.max_hu)).round() as usize).clamp(8, 4096);
    let nb = (((b_max - b_min) / (2.0 * m0.hv)).ceil() as usize).clamp(1, 1024);
    let mut grid = Grid {
        nphi,
        nb,
        b_min,
        b_max,
        offsets: vec![0; nphi * nb + 1],
        items: Vec::new(),
    };
    let mut cells: Vec<Vec<u32>> = vec![Vec::new(); nphi * nb];
    for (k, &(phic, span, b0, b1)) in feet.iter().enumerate() {
        let dphi = span + GRID_MARGIN / mean_r.max(1.0);
        let p0 = grid.phi_bin(phic - dphi);
        let p1 = grid.phi_bin(phic + dphi).min(p0 + nphi as i64 - 1);
        let c0 = grid.b_bin(b0 - GRID_MARGIN).max(0);
        let c1 = grid.b_bin(b1 + GRID_MARGIN).min(nb as i64 - 1);
        for p in p0..=p1 {
            let p = p.rem_euclid(nphi as i64) as usize;
            for c in c0..=c1 {
                cells[p * nb + c as usize].push(members[k] as u32);
            }
        }
    }
    for (c, list) in cells.iter().enumerate() {
        grid.items.extend_from_slice(list);
        grid.offsets[c + 1] = grid.items.len() as u32;
    }
    Layer {
        volume_id,
        layer_id,
        shape,
        reference,
        r_min,
        r_max,
        z_min,
        z_max,
        depth,
        modules: members,
        grid,
    }
}
