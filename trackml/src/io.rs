//! TrackML CSV events: `event%09d-{hits,truth,particles,cells,spacepoints}.csv[.gz]` and labels.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::csv::{write_text, Table};
use crate::error::{Error, Result};

/// One spacepoint as in the hits file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub hit_id: u64,
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub volume_id: u32,
    pub layer_id: u32,
    pub module_id: u32,
}

/// Truth of one spacepoint: the particle (0 = noise or ghost), its true position and momentum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruthHit {
    pub hit_id: u64,
    pub particle_id: u64,
    pub tx: f64,
    pub ty: f64,
    pub tz: f64,
    pub tpx: f64,
    pub tpy: f64,
    pub tpz: f64,
    pub weight: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Particle {
    pub particle_id: u64,
    pub particle_type: i64,
    pub vx: f64,
    pub vy: f64,
    pub vz: f64,
    pub px: f64,
    pub py: f64,
    pub pz: f64,
    pub q: i32,
    pub nhits: u32,
}

impl Particle {
    pub fn pt(&self) -> f64 {
        self.px.hypot(self.py)
    }
    pub fn eta(&self) -> f64 {
        let pt = self.pt();
        if pt > 0.0 {
            (self.pz / pt).asinh()
        } else {
            f64::INFINITY.copysign(self.pz)
        }
    }
    /// Transverse distance of the production vertex from the beam line (mm).
    pub fn vertex_r(&self) -> f64 {
        self.vx.hypot(self.vy)
    }
}

/// The two stereo clusters a strip spacepoint was built from (global centres, mm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StripClusters {
    pub hit_id: u64,
    pub cl1: [f64; 3],
    pub cl2: [f64; 3],
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    pub hit_id: u64,
    pub ch0: i64,
    pub ch1: i64,
    pub value: f64,
}

/// One event; `hits[i]` is spacepoint `i` of the pipeline. `truth`, when present, is aligned
/// with `hits` (row `i` describes `hits[i]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub event_id: u64,
    pub hits: Vec<Hit>,
    pub truth: Option<Vec<TruthHit>>,
    pub particles: Option<Vec<Particle>>,
    pub spacepoints: Option<Vec<StripClusters>>,
    pub cells: Option<Vec<Cell>>,
}

pub fn event_prefix(event_id: u64) -> String {
    format!("event{event_id:09}")
}

fn find(dir: &Path, event_id: u64, kind: &str) -> Option<PathBuf> {
    [".csv", ".csv.gz"]
        .iter()
        .map(|s| dir.join(format!("{}-{kind}{s}", event_prefix(event_id))))
        .find(|p| p.exists())
}

/// Event ids that have a hits file in `dir`, sorted.
pub fn list_events(dir: &Path) -> Result<Vec<u64>> {
    list_kind(dir, "hits")
}

/// Event ids that have a labels file in `dir`, sorted.
pub fn list_labels(dir: &Path) -> Result<Vec<u64>> {
    list_kind(dir, "labels")
}

fn list_kind(dir: &Path, kind: &str) -> Result<Vec<u64>> {
    let tail = format!("-{kind}.csv");
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix("event") else {
            continue;
        };
        if rest.len() < 9 || !rest.is_char_boundary(9) {
            continue;
        }
        let (digits, suffix) = rest.split_at(9);
        let named = suffix == tail || suffix.strip_suffix(".gz") == Some(tail.as_str());
        if named && digits.bytes().all(|b| b.is_ascii_digit()) {
            ids.push(digits.parse::<u64>().expect("nine digits"));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn read_hits(path: &Path) -> Result<Vec<Hit>> {
    let t = Table::read(path)?;
    let (id, x, y, z) = (
        t.column::<u64>("hit_id")?,
        t.column::<f64>("x")?,
        t.column::<f64>("y")?,
        t.column::<f64>("z")?,
    );
    let (v, l, m) = (
        t.column::<u32>("volume_id")?,
        t.column::<u32>("layer_id")?,
        t.column::<u32>("module_id")?,
    );
    Ok((0..t.rows())
        .map(|i| Hit {
            hit_id: id[i],
            x: x[i],
            y: y[i],
            z: z[i],
            volume_id: v[i],
            layer_id: l[i],
            module_id: m[i],
        })
        .collect())
}

fn read_truth(path: &Path) -> Result<Vec<TruthHit>> {
    let t = Table::read(path)?;
    let id = t.column::<u64>("hit_id")?;
    let pid = t.column::<u64>("particle_id")?;
    let f = |n| t.column::<f64>(n);
    let (tx, ty, tz, px, py, pz) = (
        f("tx")?,
        f("ty")?,
        f("tz")?,
        f("tpx")?,
        f("tpy")?,
        f("tpz")?,
    );
    let w = if t.has("weight") {
        f("weight")?
    } else {
        vec![0.0; t.rows()]
    };
    Ok((0..t.rows())
        .map(|i| TruthHit {
            hit_id: id[i],
            particle_id: pid[i],
            tx: tx[i],
            ty: ty[i],
            tz: tz[i],
            tpx: px[i],
            tpy: py[i],
            tpz: pz[i],
            weight: w[i],
        })
        .collect())
}

fn read_particles(path: &Path) -> Result<Vec<Particle>> {
    let t = Table::read(path)?;
    let id = t.column::<u64>("particle_id")?;
    // The first TrackML release has no particle_type column.
    let ty = if t.has("particle_type") {
        t.column::<i64>("particle_type")?
    } else {
        vec![0; t.rows()]
    };
    let f = |n| t.column::<f64>(n);
    let (vx, vy, vz, px, py, pz) = (f("vx")?, f("vy")?, f("vz")?, f("px")?, f("py")?, f("pz")?);
    let q = t.column::<i32>("q")?;
    let nhits = t.column::<u32>("nhits")?;
    Ok((0..t.rows())
        .map(|i| Particle {
            particle_id: id[i],
            particle_type: ty[i],
            vx: vx[i],
            vy: vy[i],
            vz: vz[i],
            px: px[i],
            py: py[i],
            pz: pz[i],
            q: q[i],
            nhits: nhits[i],
        })
        .collect())
}

fn read_spacepoints(path: &Path) -> Result<Vec<StripClusters>> {
    let t = Table::read(path)?;
    let id = t.column::<u64>("hit_id")?;
    let c: Vec<Vec<f64>> = ["cl1_x", "cl1_y", "cl1_z", "cl2_x", "cl2_y", "cl2_z"]
        .iter()
        .map(|n| t.column::<f64>(n))
        .collect::<Result<_>>()?;
    Ok((0..t.rows())
        .map(|i| StripClusters {
            hit_id: id[i],
            cl1: [c[0][i], c[1][i], c[2][i]],
            cl2: [c[3][i], c[4][i], c[5][i]],
        })
        .collect())
}

fn read_cells(path: &Path) -> Result<Vec<Cell>> {
    let t = Table::read(path)?;
    let (id, ch0, ch1, value) = (
        t.column::<u64>("hit_id")?,
        t.column::<i64>("ch0")?,
        t.column::<i64>("ch1")?,
        t.column::<f64>("value")?,
    );
    Ok((0..t.rows())
        .map(|i| Cell {
            hit_id: id[i],
            ch0: ch0[i],
            ch1: ch1[i],
            value: value[i],
        })
        .collect())
}

/// Reads one event: the hits file is required; truth, particles, strip spacepoints and cells
/// are read when present. Truth rows are put in hits order.
pub fn read_event(dir: &Path, event_id: u64) -> Result<Event> {
    let hits_path = find(dir, event_id, "hits").ok_or_else(|| {
        Error::Invalid(format!(
            "no {}-hits.csv[.gz] in {}",
            event_prefix(event_id),
            dir.display()
        ))
    })?;
    let (hits, (truth, (particles, (spacepoints, cells)))) = rayon::join(
        || read_hits(&hits_path),
        || {
            rayon::join(
                || find(dir, event_id, "truth").map(|p| read_truth(&p)),
                || {
                    rayon::join(
                        || find(dir, event_id, "particles").map(|p| read_particles(&p)),
                        || {
                            (
                                find(dir, event_id, "spacepoints").map(|p| read_spacepoints(&p)),
                                find(dir, event_id, "cells").map(|p| read_cells(&p)),
                            )
                        },
                    )
                },
            )
        },
    );
    let hits = hits?;
    let truth = match truth.transpose()? {
        Some(t) => Some(align_truth(&hits, t, &hits_path)?),
        None => None,
    };
    let spacepoints = spacepoints.transpose()?;
    if let Some(sp) = &spacepoints {
        let known: std::collections::HashSet<u64> = hits.iter().map(|h| h.hit_id).collect();
        if let Some(c) = sp.iter().find(|c| !known.contains(&c.hit_id)) {
            return Err(Error::Invalid(format!(
                "{}-spacepoints.csv in {} names hit_id {}, which is not in the hits file",
                event_prefix(event_id),
                dir.display(),
                c.hit_id
            )));
        }
    }
    Ok(Event {
        event_id,
        hits,
        truth,
        particles: particles.transpose()?,
        spacepoints,
        cells: cells.transpose()?,
    })
}

fn align_truth(hits: &[Hit], truth: Vec<TruthHit>, hits_path: &Path) -> Result<Vec<TruthHit>> {
    let aligned =
        truth.len() == hits.len() && truth.iter().zip(hits).all(|(t, h)| t.hit_id == h.hit_id);
    if aligned {
        return Ok(truth);
    }
    let by_id: HashMap<u64, &TruthHit> = truth.iter().map(|t| (t.hit_id, t)).collect();
    hits.iter()
        .map(|h| {
            by_id.get(&h.hit_id).map(|t| **t).ok_or_else(|| {
                Error::Invalid(format!(
                    "hit_id {} of {} has no truth row",
                    h.hit_id,
                    hits_path.display()
                ))
            })
        })
        .collect()
}

/// Writes the hits and every optional table the event has, as plain CSV.
pub fn write_event(dir: &Path, event: &Event) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let prefix = event_prefix(event.event_id);
    let path = |kind: &str| dir.join(format!("{prefix}-{kind}.csv"));
    let jobs: Vec<(PathBuf, Box<dyn Fn() -> String + Sync + '_>)> = {
        let mut jobs: Vec<(PathBuf, Box<dyn Fn() -> String + Sync>)> =
            vec![(path("hits"), Box::new(|| format_hits(&event.hits)))];
        if let Some(t) = &event.truth {
            jobs.push((path("truth"), Box::new(move || format_truth(t))));
        }
        if let Some(p) = &event.particles {
            jobs.push((path("particles"), Box::new(move || format_particles(p))));
        }
        if let Some(s) = &event.spacepoints {
            jobs.push((path("spacepoints"), Box::new(move || format_spacepoints(s))));
        }
        if let Some(c) = &event.cells {
            jobs.push((path("cells"), Box::new(move || format_cells(c))));
        }
        jobs
    };
    use rayon::prelude::*;
    jobs.par_iter()
        .try_for_each(|(path, format)| write_text(path, &format()))
}

/// Appends `x` with `decimals` digits after the point (fast path of `{:.N}`).
fn push_fixed(s: &mut String, x: f64, decimals: u32) {
    let scale = 10f64.powi(decimals as i32);
    let scaled = (x * scale).round();
    if !scaled.is_finite() || scaled.abs() >= 9.0e15 {
        let _ = write!(s, "{x:.prec$}", prec = decimals as usize);
        return;
    }
    let mut n = scaled as i64;
    if n < 0 {
        s.push('-');
        n = -n;
    }
    let unit = 10i64.pow(decimals);
    push_int(s, (n / unit) as u64);
    if decimals > 0 {
        s.push('.');
        let frac = (n % unit) as u64;
        let mut digits = [b'0'; 20];
        let mut f = frac;
        for k in (0..decimals as usize).rev() {
            digits[k] = b'0' + (f % 10) as u8;
            f /= 10;
        }
        s.push_str(std::str::from_utf8(&digits[..decimals as usize]).expect("ascii digits"));
    }
}

fn push_int(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&digits[k..]).expect("ascii digits"));
}

/// Appends a comma-separated row: integers then fixed-point floats, and a newline.
fn push_row(s: &mut String, ints: &[i64], floats: &[(f64, u32)], tail: &[i64]) {
    let mut first = true;
    let mut sep = |s: &mut String| {
        if !first {
            s.push(',');
        }
        first = false;
    };
    for &i in ints {
        sep(s);
        if i < 0 {
            s.push('-');
        }
        push_int(s, i.unsigned_abs());
    }
    for &(x, d) in floats {
        sep(s);
        push_fixed(s, x, d);
    }
    for &i in tail {
        sep(s);
        if i < 0 {
            s.push('-');
        }
        push_int(s, i.unsigned_abs());
    }
    s.push('\n');
}

fn format_hits(hits: &[Hit]) -> String {
    let mut s = String::with_capacity(hits.len() * 48 + 64);
    s.push_str("hit_id,x,y,z,volume_id,layer_id,module_id\n");
    for h in hits {
        push_row(
            &mut s,
            &[h.hit_id as i64],
            &[(h.x, 4), (h.y, 4), (h.z, 4)],
            &[h.volume_id as i64, h.layer_id as i64, h.module_id as i64],
        );
    }
    s
}

fn format_truth(truth: &[TruthHit]) -> String {
    let mut s = String::with_capacity(truth.len() * 96 + 64);
    s.push_str("hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight\n");
    for t in truth {
        push_row(
            &mut s,
            &[t.hit_id as i64, t.particle_id as i64],
            &[
                (t.tx, 4),
                (t.ty, 4),
                (t.tz, 4),
                (t.tpx, 6),
                (t.tpy, 6),
                (t.tpz, 6),
                (t.weight, 12),
            ],
            &[],
        );
    }
    s
}

fn format_particles(particles: &[Particle]) -> String {
    let mut s = String::with_capacity(particles.len() * 96 + 64);
    s.push_str("particle_id,particle_type,vx,vy,vz,px,py,pz,q,nhits\n");
    for p in particles {
        push_row(
            &mut s,
            &[p.particle_id as i64, p.particle_type],
            &[
                (p.vx, 6),
                (p.vy, 6),
                (p.vz, 6),
                (p.px, 6),
                (p.py, 6),
                (p.pz, 6),
            ],
            &[p.q as i64, p.nhits as i64],
        );
    }
    s
}

fn format_spacepoints(sp: &[StripClusters]) -> String {
    let mut s = String::with_capacity(sp.len() * 72 + 64);
    s.push_str("hit_id,cl1_x,cl1_y,cl1_z,cl2_x,cl2_y,cl2_z\n");
    for c in sp {
        let f = |x: f64| (x, 4);
        push_row(
            &mut s,
            &[c.hit_id as i64],
            &[
                f(c.cl1[0]),
                f(c.cl1[1]),
                f(c.cl1[2]),
                f(c.cl2[0]),
                f(c.cl2[1]),
                f(c.cl2[2]),
            ],
            &[],
        );
    }
    s
}

fn format_cells(cells: &[Cell]) -> String {
    let mut s = String::with_capacity(cells.len() * 24 + 32);
    s.push_str("hit_id,ch0,ch1,value\n");
    for c in cells {
        push_row(
            &mut s,
            &[c.hit_id as i64, c.ch0, c.ch1],
            &[(c.value, 6)],
            &[],
        );
    }
    s
}

/// Writes `event%09d-labels.csv` (`hit_id,track_id`, -1 = no track).
pub fn write_labels(dir: &Path, event_id: u64, hit_ids: &[u64], labels: &[i64]) -> Result<()> {
    if hit_ids.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "event {event_id}: {} hit ids but {} labels",
            hit_ids.len(),
            labels.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut s = String::with_capacity(hit_ids.len() * 16 + 20);
    s.push_str("hit_id,track_id\n");
    for (&h, &l) in hit_ids.iter().zip(labels) {
        push_row(&mut s, &[h as i64, l], &[], &[]);
    }
    write_text(
        &dir.join(format!("{}-labels.csv", event_prefix(event_id))),
        &s,
    )
}

/// Reads `event%09d-labels.csv[.gz]` as `(hit_id, track_id)` rows in file order.
pub fn read_labels(dir: &Path, event_id: u64) -> Result<Vec<(u64, i64)>> {
    let path = find(dir, event_id, "labels").ok_or_else(|| {
        Error::Invalid(format!(
            "no {}-labels.csv[.gz] in {}",
            event_prefix(event_id),
            dir.display()
        ))
    })?;
    let t = Table::read(&path)?;
    let ids = t.column::<u64>("hit_id")?;
    let labels = t.column::<i64>("track_id")?;
    Ok(ids.into_iter().zip(labels).collect())
}

/// Row of each hit id in the hits table.
pub fn hit_rows(hits: &[Hit]) -> HashMap<u64, usize> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| (h.hit_id, i))
        .collect()
}

/// Puts label rows in hits order; hits without a row get -1.
pub fn labels_for_hits(event: &Event, rows: &[(u64, i64)]) -> Result<Vec<i64>> {
    let row_of = hit_rows(&event.hits);
    let mut labels = vec![-1; event.hits.len()];
    for &(hit_id, label) in rows {
        let i = row_of.get(&hit_id).ok_or_else(|| {
            Error::Invalid(format!(
                "event {}: label for hit_id {hit_id}, which is not in the hits file",
                event.event_id
            ))
        })?;
        labels[*i] = label;
    }
    Ok(labels)
}
