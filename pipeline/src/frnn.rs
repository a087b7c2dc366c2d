//! Fixed-radius neighbours in the embedding space on a grid: the radius graph of docs/DESIGN.md,
//! exactly (same edge set as the all-pairs definition), in time linear in the spacepoints.
//!
//! The points are counting-sorted into cells over their projections on the event embedding's
//! four principal axes (an orthonormal projection never lengthens a distance; trained
//! embeddings spread over few directions, so these cells hold far fewer points than cells over
//! the first dimensions). A cell is slightly wider than the radius (wider still when the box
//! would need too many cells), so every neighbour of a point lies in the block of 3^4 cells
//! around it. A query visits that block nearest cells first; once it holds `knn` neighbours,
//! the farthest of them bounds the rest of the search (cells farther away along the grid axes
//! are skipped), which at pile-up 200 halves the candidates; it starts from a guess of that
//! bound taken from the previous query (see `Grid::nearest`). Candidates pass two f32
//! pre-tests (distance along the grid axes, then the full distance, each with a margin above
//! its rounding) before the full-dimension f64 distance of the definition decides. Queries
//! run in parallel over blocks of the sorted points; each keeps the pairs of its list that it
//! is the source of (the radius-key order of the edge convention) and hands the others to
//! their source, bucketed in index order; each source writes the merged, sorted union of the
//! two, in index order: no global sort.
use rayon::prelude::*;

use crate::edges::{starts_at, Buckets};
use crate::error::{PipelineError, Result};
use crate::stage::{edge_tensor, host_slice, EventData, ExecutionContext, GraphConstruction};

/// Settings of the radius graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RadiusGraphConfig {
    /// Neighbourhood radius in the embedding space (> 0).
    pub radius: f32,
    /// Neighbours kept per spacepoint, nearest first (>= 1).
    pub knn: usize,
}

/// Neighbour order of the definition: by squared distance, then by index.
pub(crate) type Key = (f64, u32);

#[inline]
fn key_order(a: &Key, b: &Key) -> std::cmp::Ordering {
    // squared distances are >= +0.0, ordered as their bits
    (a.0.to_bits(), a.1).cmp(&(b.0.to_bits(), b.1))
}

/// The same order as a test (the GPU kernels' host emulation).
#[cfg(test)]
#[inline]
pub(crate) fn key_less(a: Key, b: Key) -> bool {
    key_order(&a, &b).is_lt()
}

/// Squared distance accumulated in f64 over the dimensions in order, when below `r2`.
/// Stopping early is exact: the partial sums of non-negative terms never decrease.
#[inline]
pub(crate) fn distance2_below(a: &[f32], b: &[f32], r2: f64) -> Option<f64> {
    let head = a.len().min(3);
    let mut d2 = 0.0f64;
    for k in 0..head {
        let d = a[k] as f64 - b[k] as f64;
        d2 += d * d;
    }
    if d2 >= r2 {
        return None;
    }
    for k in head..a.len() {
        let d = a[k] as f64 - b[k] as f64;
        d2 += d * d;
    }
    (d2 < r2).then_some(d2)
}

/// Squared distance in f32 summed in four lanes (vectorised): a pre-test only, its rounding
/// (1e-6 relative for a dozen dimensions) covered by the caller's margin.
#[inline]
fn distance2_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 4];
    let (mut xa, mut xb) = (a.chunks_exact(4), b.chunks_exact(4));
    for (x, y) in (&mut xa).zip(&mut xb) {
        for k in 0..4 {
            let d = x[k] - y[k];
            lanes[k] += d * d;
        }
    }
    let mut sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (x, y) in xa.remainder().iter().zip(xb.remainder()) {
        sum += (x - y) * (x - y);
    }
    sum
}

/// Relative widening of the cells beyond the radius: covers the rounding of the cell index
/// computation, far above f64 precision and far below any effect on speed.
const CELL_MARGIN: f64 = 1e-6;
/// Points per block of queries handed to one rayon task.
const QUERY_BLOCK: usize = 512;
/// A query's first search bound: the previous query's `knn`-th squared distance times this.
const GUESS: f64 = 1.5;

/// Where the grid lies: origin, cell width and cells per axis over up to `A` grid axes.
/// Shared by the CPU grid (`CPU_AXES` principal axes) and the CUDA one (`gpu::frnn`; axes: the
/// first three dimensions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GridGeometry<const A: usize = 3> {
    /// Number of grid axes used: `min(dim, A)`; the others have one cell.
    pub axes: usize,
    pub lo: [f64; A],
    pub cell: f64,
    pub shape: [usize; A],
}

impl<const A: usize> GridGeometry<A> {
    /// The grid over the box `lo..=hi` (per axis) for `n` points: cells at least the radius
    /// wide, wider when the box would need too many cells (embeddings often fill a thin shell of
    /// the box, so many empty cells are allowed).
    pub fn new(lo: [f64; A], hi: [f64; A], axes: usize, n: usize, radius: f32) -> Self {
        let max_cells = (32 * n).max(1 << 16) as f64;
        let mut cell = radius as f64 * (1.0 + CELL_MARGIN);
        let mut shape = [1usize; A];
        loop {
            let mut total = 1.0f64;
            for k in 0..axes {
                let cells = ((hi[k] - lo[k]) / cell).floor() + 1.0;
                total *= cells;
                shape[k] = cells.min(usize::MAX as f64 / 4.0) as usize;
            }
            if total <= max_cells {
                break;
            }
            cell *= (total / max_cells).powf(1.0 / axes as f64) * 1.01;
        }
        Self {
            axes,
            lo,
            cell,
            shape,
        }
    }

    /// Smallest and largest of the first (up to) three coordinates, in f64: the GPU grid's box
    /// (computed on the device there; this is its host emulation's).
    #[cfg(test)]
    pub fn bounds(points: &[f32], dim: usize) -> ([f64; A], [f64; A]) {
        let mut lo = [0.0f64; A];
        let mut hi = [0.0f64; A];
        for k in 0..dim.min(A) {
            let (mut a, mut b) = (f64::INFINITY, f64::NEG_INFINITY);
            for p in points.chunks_exact(dim) {
                a = a.min(p[k] as f64);
                b = b.max(p[k] as f64);
            }
            lo[k] = a;
            hi[k] = b;
        }
        (lo, hi)
    }

    /// The cell of a point from its grid-axis coordinates.
    #[inline]
    pub fn cell_of(&self, p: &[f64; A]) -> [usize; A] {
        let mut c = [0usize; A];
        for k in 0..self.axes {
            let x = ((p[k] - self.lo[k]) / self.cell).floor();
            c[k] = (x.max(0.0) as usize).min(self.shape[k] - 1);
        }
        c
    }

    #[inline]
    pub fn linear(&self, c: [usize; A]) -> usize {
        c.iter()
            .zip(&self.shape)
            .fold(0, |acc, (&ck, &sk)| acc * sk + ck)
    }

    pub fn num_cells(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Eigenvalues (descending) and unit eigenvectors of a symmetric `d x d` matrix (row-major), by
/// cyclic Jacobi rotations: small matrices only (the embedding dimension).
fn symmetric_eigen(mut a: Vec<f64>, d: usize) -> Vec<(f64, Vec<f64>)> {
    let mut v = vec![0.0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..64 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale || scale == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q].
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut pairs: Vec<(f64, Vec<f64>)> = (0..d)
        .map(|j| (a[j * d + j], (0..d).map(|k| v[k * d + j]).collect()))
        .collect();
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
    pairs
}

/// Up to `count` orthonormal axes along which the points spread most (principal components);
/// the coordinate axes when there are no more than `count` dimensions.
pub(crate) fn principal_axes(points: &[f32], dim: usize, count: usize) -> Vec<Vec<f64>> {
    let n = points.len() / dim;
    if dim <= count || n < 2 {
        return (0..dim.min(count))
            .map(|k| (0..dim).map(|j| if j == k { 1.0 } else { 0.0 }).collect())
            .collect();
    }
    let mut mean = vec![0.0f64; dim];
    for p in points.chunks_exact(dim) {
        for (m, &x) in mean.iter_mut().zip(p) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0f64; dim * dim];
    let mut centred = vec![0.0f64; dim];
    for p in points.chunks_exact(dim) {
        for k in 0..dim {
            centred[k] = p[k] as f64 - mean[k];
        }
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += centred[i] * centred[j];
            }
        }
    }
    for i in 0..dim {
        for j in 0..i {
            cov[i * dim + j] = cov[j * dim + i];
        }
    }
    symmetric_eigen(cov, dim)
        .into_iter()
        .take(count)
        .map(|(_, axis)| axis)
        .collect()
}

/// Principal axes of the CPU grid. A trained embedding at pile-up 200 still spreads along a
/// fourth axis by more than the radius: binning it too leaves a third of the candidates of
/// three axes to test, for 81 instead of 27 neighbour cells.
const CPU_AXES: usize = 4;

/// The coordinates of a point along the grid axes, in f64.
#[inline]
fn project(axes: &[Vec<f64>], p: &[f32]) -> [f64; CPU_AXES] {
    let mut out = [0.0f64; CPU_AXES];
    for (o, axis) in out.iter_mut().zip(axes) {
        *o = axis.iter().zip(p).map(|(a, &x)| a * x as f64).sum();
    }
    out
}

/// The counting-sorted grid over the principal axes.
struct Grid {
    dim: usize,
    geo: GridGeometry<CPU_AXES>,
    /// Grid-axis coordinates in sorted order.
    projected: Vec<[f64; CPU_AXES]>,
    /// The same in f32, for the cheap pre-test; `slack` bounds their rounding (see `nearest`).
    coarse: Vec<[f32; CPU_AXES]>,
    slack: f64,
    /// Bound on the f64 rounding of a cell edge and a projected coordinate: what the gap to a
    /// neighbour cell is shrunk by before it prunes the cell.
    edge_eps: f64,
    /// Offsets of the neighbour blocks on all axes but the last, nearest first (fewest
    /// non-zero offsets), so that the `knn` bound tightens early.
    offsets: Vec<[i8; CPU_AXES - 1]>,
    /// `cell_start[c]..cell_start[c + 1]`: the sorted positions of the points in cell `c`.
    cell_start: Vec<u32>,
    /// Original index of the point at each sorted position.
    order: Vec<u32>,
    /// Coordinates in sorted order, `dim` per point.
    sorted: Vec<f32>,
}

impl Grid {
    fn new(points: &[f32], dim: usize, radius: f32) -> Self {
        let n = points.len() / dim;
        let axes = principal_axes(points, dim, CPU_AXES);
        let projected: Vec<[f64; CPU_AXES]> = points
            .par_chunks_exact(dim)
            .map(|p| project(&axes, p))
            .collect();
        let mut lo = [0.0f64; CPU_AXES];
        let mut hi = [0.0f64; CPU_AXES];
        for k in 0..axes.len() {
            lo[k] = projected.iter().map(|c| c[k]).fold(f64::INFINITY, f64::min);
            hi[k] = projected
                .iter()
                .map(|c| c[k])
                .fold(f64::NEG_INFINITY, f64::max);
        }
        let geo = GridGeometry::new(lo, hi, axes.len(), n, radius);
        let ncells = geo.num_cells();
        let cells: Vec<u32> = projected
            .par_iter()
            .map(|c| geo.linear(geo.cell_of(c)) as u32)
            .collect();
        let Buckets {
            offsets: start,
            values: order,
        } = Buckets::new(
            ncells,
            cells.iter().enumerate().map(|(i, &c)| (c, i as u32)),
        );
        let mut sorted = vec![0f32; n * dim];
        sorted
            .par_chunks_exact_mut(dim)
            .zip(order.par_iter())
            .for_each(|(dst, &i)| {
                dst.copy_from_slice(&points[i as usize * dim..(i as usize + 1) * dim])
            });
        let projected: Vec<[f64; CPU_AXES]> =
            order.par_iter().map(|&i| projected[i as usize]).collect();
        let coarse = projected.iter().map(|c| c.map(|v| v as f32)).collect();
        // Rounding a coordinate to f32 moves it by at most 2^-24 of the largest magnitude;
        // f32 differences, squares and a sum of a dozen terms stay within 1e-6 relative.
        let largest = lo.iter().chain(&hi).fold(0.0f64, |m, v| m.max(v.abs()));
        let slack = 4.0 * f32::EPSILON as f64 * largest * (CPU_AXES as f64).sqrt();
        let edge_eps = 1e-9 * (largest + geo.cell);
        let mut offsets: Vec<[i8; CPU_AXES - 1]> = (0..3usize.pow(CPU_AXES as u32 - 1))
            .map(|code| std::array::from_fn(|k| (code / 3usize.pow(k as u32) % 3) as i8 - 1))
            .filter(|o: &[i8; CPU_AXES - 1]| {
                o.iter().enumerate().all(|(k, &v)| v == 0 || k < geo.axes)
            })
            .collect();
        offsets.sort_by_key(|o| o.iter().filter(|&&v| v != 0).count());
        Grid {
            dim,
            geo,
            projected,
            coarse,
            slack,
            edge_eps,
            offsets,
            cell_start: start,
            order,
            sorted,
        }
    }

    fn point(&self, pos: usize) -> &[f32] {
        &self.sorted[pos * self.dim..(pos + 1) * self.dim]
    }
}

/// Squared radius padded for the f32 pre-tests' rounding: the coarse test over the grid axes
/// (coordinates off by up to `slack`) and the full-dimension one (1e-6 relative).
#[inline]
fn padded(bound: f64, slack: f64) -> (f32, f32) {
    let coarse = ((bound.sqrt() + slack).powi(2) * (1.0 + 1e-4)) as f32;
    (coarse, (bound * (1.0 + 1e-4)) as f32)
}

impl Grid {
    /// `N(i)` of the point at sorted position `pos`: the `knn` nearest other points within the
    /// radius (key order), as (d2, original index) in `near`, unordered; the `knn`-th one's
    /// d2 when there are `knn` (else infinite). `passed` is scratch.
    ///
    /// Consecutive sorted points are close, so the previous query's `knn`-th distance times
    /// `GUESS` (`guess`) is tried first as the search bound: when `knn` points lie within it,
    /// they are the nearest (every closer point was found); else the search runs again with
    /// the radius (3-12% of the queries at pile-up 200).
    fn nearest(
        &self,
        pos: usize,
        r2: f64,
        knn: usize,
        guess: f64,
        near: &mut Vec<Key>,
        passed: &mut Vec<u32>,
    ) -> f64 {
        if guess < r2 {
            let kth = self.search(pos, r2, guess, knn, near, passed);
            if near.len() == knn {
                return kth;
            }
        }
        self.search(pos, r2, r2, knn, near, passed)
    }

    /// The `knn` nearest other points with d2 at most `start` (below `r2` when `start` is
    /// `r2`), as for `nearest`.
    ///
    /// Blocks of cells are visited nearest first; once `knn` neighbours are known, the key of
    /// the last of them bounds the search: a cell whose gap to the query along the grid axes is
    /// wider is skipped, and the per-candidate tests use the tighter bound. The gaps are
    /// lower bounds of the full distance (a projection never lengthens one), shrunk by their
    /// rounding, and a candidate as far as the bound still passes (its index may break the
    /// tie), so the list is exact.
    fn search(
        &self,
        pos: usize,
        r2: f64,
        start: f64,
        knn: usize,
        near: &mut Vec<Key>,
        passed: &mut Vec<u32>,
    ) -> f64 {
        let q = self.point(pos);
        let qc = self.coarse[pos];
        let qp = &self.projected[pos];
        let geo = &self.geo;
        let c = geo.cell_of(qp);
        let last = CPU_AXES - 1;
        // Squared gaps to the cells below and above along each axis.
        let mut gap = [[0.0f64; 2]; CPU_AXES];
        for (k, g) in gap.iter_mut().enumerate().take(geo.axes) {
            let edge = geo.lo[k] + c[k] as f64 * geo.cell;
            let below = (qp[k] - edge - self.edge_eps).max(0.0);
            let above = (edge + geo.cell - qp[k] - self.edge_eps).max(0.0);
            *g = [below * below, above * above];
        }
        near.clear();
        // The search bound: `start` until `knn` neighbours are known, then the last one's d2
        // (inclusive: `limit` is the next f64 above it; below r2 when the bound is r2).
        let mut bound = start;
        let mut limit = if start < r2 { start.next_up() } else { r2 };
        let mut bounded = false;
        let (mut coarse_r2, mut full_r2) = padded(start, self.slack);
        for off in &self.offsets {
            let mut cell = c;
            let mut lb = 0.0f64;
            let mut inside = true;
            for k in 0..last {
                match off[k] {
                    -1 if c[k] == 0 => inside = false,
                    -1 => {
                        cell[k] -= 1;
                        lb += gap[k][0];
                    }
                    1 if c[k] + 1 >= geo.shape[k] => inside = false,
                    1 => {
                        cell[k] += 1;
                        lb += gap[k][1];
                    }
                    _ => {}
                }
            }
            if !inside || lb > bound {
                continue;
            }
            // Along the last axis the (up to) three cells are adjacent in memory; the middle
            // one is nearest, so the ones kept form one range.
            let mut lo_cell = c[last];
            if lo_cell > 0 && lb + gap[last][0] <= bound {
                lo_cell -= 1;
            }
            let mut hi_cell = c[last];
            if hi_cell + 1 < geo.shape[last] && lb + gap[last][1] <= bound {
                hi_cell += 1;
            }
            cell[last] = lo_cell;
            let from = self.cell_start[geo.linear(cell)] as usize;
            cell[last] = hi_cell;
            let to = self.cell_start[geo.linear(cell) + 1] as usize;
            if from == to {
                continue;
            }
            // Two f32 tests, each with a margin above its rounding, drop candidates before the
            // exact f64 distance: along the grid axes, then over all dimensions. Each writes
            // every candidate and advances past the passing ones (no branch to mispredict).
            passed.resize(to - from, 0);
            let mut kept = 0usize;
            for (cand, cc) in (from..to).zip(&self.coarse[from..to]) {
                let mut axes_d2 = 0.0f32;
                for k in 0..CPU_AXES {
                    let d = qc[k] - cc[k];
                    axes_d2 += d * d;
                }
                passed[kept] = cand as u32;
                kept += (axes_d2 <= coarse_r2) as usize;
            }
            let mut close = 0usize;
            for i in 0..kept {
                let cand = passed[i];
                let d2 = distance2_f32(q, self.point(cand as usize));
                passed[close] = cand;
                close += (d2 <= full_r2) as usize;
            }
            for &cand in &passed[..close] {
                let cand = cand as usize;
                if cand != pos {
                    if let Some(d2) = distance2_below(q, self.point(cand), limit) {
                        near.push((d2, self.order[cand]));
                    }
                }
            }
            if near.len() >= 2 * knn || (!bounded && near.len() >= knn) {
                bounded = true;
                let kth = keep_nearest(near, knn);
                if kth < bound {
                    bound = kth;
                    limit = kth.next_up().min(r2);
                    (coarse_r2, full_r2) = padded(bound, self.slack);
                }
            }
        }
        let kth = keep_nearest(near, knn);
        if near.len() == knn {
            kth
        } else {
            f64::INFINITY
        }
    }
}

/// Cut `near` to its `knn` nearest (key order); the largest d2 kept.
fn keep_nearest(near: &mut Vec<Key>, knn: usize) -> f64 {
    if near.len() > knn {
        near.select_nth_unstable_by(knn - 1, key_order);
        near.truncate(knn);
    }
    near.iter().fold(0.0, |m, k| m.max(k.0))
}

/// What one block of queries (in grid order) found: the members of each `N(s)` that `s` is
/// the source of, and the others as (source, target) pairs for their source to collect.
struct BlockTargets {
    /// Original index of each query, how many targets it starts and how many it hands on.
    queries: Vec<(u32, u32, u32)>,
    /// The targets, sorted, query after query.
    targets: Vec<u32>,
    /// The members of each `N(s)` that are the source of their pair with `s`, query after
    /// query.
    reverse: Vec<u32>,
}

/// The radius graph of docs/DESIGN.md in its edge convention: `[src..., dst...]` (`[2, E]`),
/// each pair of the union of the neighbour lists once, `src` the smaller `radius_key` (then
/// index), sorted by `(src, dst)`. `points` holds `dim` f32 coordinates per point, all finite.
pub fn radius_graph(
    points: &[f32],
    dim: usize,
    radius_key: &[f32],
    cfg: &RadiusGraphConfig,
) -> Vec<i64> {
    assert!(dim > 0 && cfg.radius > 0.0 && cfg.knn > 0);
    let n = points.len() / dim;
    assert_eq!(radius_key.len(), n, "one radius key per point");
    if n < 2 {
        return Vec::new();
    }
    let r = cfg.radius as f64;
    let r2 = r * r;
    let grid = Grid::new(points, dim, cfg.radius);

    // Pass 1: N(s) of every point, split by which end of each pair is the source.
    let blocks: Vec<BlockTargets> = (0..n.div_ceil(QUERY_BLOCK))
        .into_par_iter()
        .map(|b| {
            let positions = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n);
            let mut out = BlockTargets {
                queries: Vec::with_capacity(positions.len()),
                targets: Vec::with_capacity(positions.len() * cfg.knn.min(64) / 2),
                reverse: Vec::with_capacity(positions.len() * cfg.knn.min(64) / 2),
            };
            let mut near = Vec::new();
            let mut passed = Vec::new();
            let mut guess = f64::INFINITY;
            for pos in positions {
                let s = grid.order[pos];
                let kth = grid.nearest(pos, r2, cfg.knn, guess * GUESS, &mut near, &mut passed);
                guess = kth;
                let (first, handed) = (out.targets.len(), out.reverse.len());
                for &(_, d) in near.iter() {
                    if starts_at(radius_key, s, d) {
                        out.targets.push(d);
                    } else {
                        out.reverse.push(d);
                    }
                }
                out.targets[first..].sort_unstable();
                out.queries.push((
                    s,
                    (out.targets.len() - first) as u32,
                    (out.reverse.len() - handed) as u32,
                ));
            }
            out
        })
        .collect();

    // Pass 2: each source's own targets, and the points that found it as the source of their
    // pair, bucketed by source (counting sort) in index order, so each bucket is sorted.
    let mut own_at = vec![(0u32, 0u32); n];
    let mut handed_at = vec![(0u32, 0u32); n];
    let mut own = Vec::with_capacity(blocks.iter().map(|b| b.targets.len()).sum());
    let mut handed = Vec::with_capacity(blocks.iter().map(|b| b.reverse.len()).sum());
    for block in &blocks {
        let (mut o, mut h) = (own.len() as u32, handed.len() as u32);
        for &(s, c, r) in &block.queries {
            own_at[s as usize] = (o, c);
            handed_at[s as usize] = (h, r);
            o += c;
            h += r;
        }
        own.extend_from_slice(&block.targets);
        handed.extend_from_slice(&block.reverse);
    }
    drop(blocks);
    let received = Buckets::new(
        n,
        handed_at.iter().enumerate().flat_map(|(s, &(from, len))| {
            handed[from as usize..(from + len) as usize]
                .iter()
                .map(move |&src| (src, s as u32))
        }),
    );
    drop((handed, handed_at));

    // Pass 3: per source, the sorted union of both lists; sources in blocks in parallel, then
    // written in index order.
    let merged: Vec<(Vec<u32>, Vec<u32>)> = (0..n.div_ceil(SOURCE_BLOCK))
        .into_par_iter()
        .map(|b| {
            let sources = b * SOURCE_BLOCK..((b + 1) * SOURCE_BLOCK).min(n);
            let mut targets = Vec::new();
            let mut lens = Vec::with_capacity(sources.len());
            for s in sources {
                let (from, len) = own_at[s];
                let mine = &own[from as usize..(from + len) as usize];
                let theirs = received.of(s);
                let first = targets.len();
                merge_sorted(mine, theirs, &mut targets);
                lens.push((targets.len() - first) as u32);
            }
            (targets, lens)
        })
        .collect();
    drop((own, received));
    let e: usize = merged.iter().map(|m| m.0.len()).sum();
    let mut index = vec![0i64; 2 * e];
    let (mut src_rest, mut dst_rest) = index.split_at_mut(e);
    let mut parts = Vec::with_capacity(merged.len());
    for (b, m) in merged.iter().enumerate() {
        let (src, s_tail) = src_rest.split_at_mut(m.0.len());
        let (dst, d_tail) = dst_rest.split_at_mut(m.0.len());
        parts.push((b * SOURCE_BLOCK, m, src, dst));
        src_rest = s_tail;
        dst_rest = d_tail;
    }
    parts
        .into_par_iter()
        .for_each(|(first_source, (targets, lens), src, dst)| {
            for (slot, &d) in dst.iter_mut().zip(targets) {
                *slot = d as i64;
            }
            let mut k = 0;
            for (s, &len) in (first_source..).zip(lens) {
                src[k..k + len as usize].fill(s as i64);
                k += len as usize;
            }
        });
    index
}

/// Append the union of two sorted lists without repeats (a pair in both lists once).
fn merge_sorted(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += (x <= y) as usize;
        j += (y <= x) as usize;
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Sources handed to one rayon task when writing the edges.
const SOURCE_BLOCK: usize = 4096;

/// The radius graph stage: needs `embedding`, sets `edge_index`. CPU grid; on a GPU context it
/// runs on a host copy of the embedding until a CUDA grid is added beside it.
pub struct RadiusGraph {
    pub cfg: RadiusGraphConfig,
}

impl GraphConstruction for RadiusGraph {
    fn build(&self, ctx: &ExecutionContext, event: &mut EventData) -> Result<()> {
        let embedding = event.embedding.as_ref().ok_or_else(|| {
            PipelineError::Config("the radius graph needs the embedding stage to run first".into())
        })?;
        let dim = embedding.size().get(1).copied().unwrap_or(0) as usize;
        let points = host_slice::<f32>(embedding, "graph")?;
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return Err(PipelineError::Input(format!(
                "the embedding model gave a non-finite value ({}) for spacepoint {}",
                points[i],
                i / dim.max(1)
            )));
        }
        let index = if dim == 0 {
            Vec::new()
        } else {
            radius_graph(&points, dim, &event.radius_key, &self.cfg)
        };
        event.edge_index = edge_tensor(&index, ctx.torch_device(), "graph")?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::edges::orient_and_sort;

    /// The definition of docs/DESIGN.md, all pairs.
    pub(crate) fn brute_force(
        points: &[f32],
        dim: usize,
        radius: f32,
        knn: usize,
    ) -> BTreeSet<(u32, u32)> {
        let n = points.len() / dim;
        let r2 = (radius as f64) * (radius as f64);
        let mut pairs = BTreeSet::new();
        for i in 0..n {
            let mut near: Vec<Key> = Vec::new();
            for j in 0..n {
                if j == i {
                    continue;
                }
                let mut d2 = 0.0f64;
                for k in 0..dim {
                    let d = points[i * dim + k] as f64 - points[j * dim + k] as f64;
                    d2 += d * d;
                }
                if d2 < r2 {
                    near.push((d2, j as u32));
                }
            }
            near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, j) in near.iter().take(knn) {
                pairs.insert((i.min(j as usize) as u32, i.max(j as usize) as u32));
            }
        }
        pairs
    }

    /// The grid's edges, checked against the brute-force definition oriented and sorted by
    /// the shared convention (radius keys with ties), as a set of unordered pairs.
    fn grid_pairs(points: &[f32], dim: usize, radius: f32, knn: usize) -> BTreeSet<(u32, u32)> {
        let n = points.len() / dim;
        let key: Vec<f32> = (0..n).map(|i| (i * 37 % 11) as f32 * 0.1).collect();
        let got = radius_graph(points, dim, &key, &RadiusGraphConfig { radius, knn });
        let expected: Vec<[u32; 2]> = brute_force(points, dim, radius, knn)
            .into_iter()
            .map(|(a, b)| [a, b])
            .collect();
        assert_eq!(
            got,
            orient_and_sort(&key, &expected),
            "dim {dim} radius {radius} knn {knn}"
        );
        expected.iter().map(|&[a, b]| (a, b)).collect()
    }

    /// Random clouds with clusters, exact duplicates and points on a lattice (exact ties).
    pub(crate) fn cloud(rng: &mut ChaCha8Rng, n: usize, dim: usize) -> Vec<f32> {
        let mut points = Vec::with_capacity(n * dim);
        for i in 0..n {
            match i % 5 {
                // duplicate of an earlier point
                0 if i > 0 => {
                    let j = rng.gen_range(0..i);
                    points.extend_from_within(j * dim..(j + 1) * dim);
                }
                // lattice points at multiples of 0.125: many equal distances
                1 => points.extend((0..dim).map(|_| rng.gen_range(0..8) as f32 * 0.125)),
                _ => points.extend((0..dim).map(|_| rng.gen_range(-0.2f32..1.2))),
            }
        }
        points
    }

    #[test]
    fn grid_equals_brute_force_on_random_clouds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for dim in [2usize, 3, 4, 8, 12] {
            for radius in [0.0625f32, 0.125, 0.3, 0.75] {
                for knn in [1usize, 3, 10, 1000] {
                    let n = rng.gen_range(30..300);
                    let points = cloud(&mut rng, n, dim);
                    grid_pairs(&points, dim, radius, knn);
                }
            }
        }
    }

    #[test]
    fn ties_at_the_radius_are_excluded_and_knn_ties_break_by_index() {
        // Points on a line at spacing 0.25: distance exactly equal to the radius is no edge.
        let points: Vec<f32> = (0..6).map(|i| i as f32 * 0.25).collect();
        let pairs = grid_pairs(&points, 1, 0.25, 10);
        assert!(pairs.is_empty(), "{pairs:?}");
        let pairs = grid_pairs(&points, 1, 0.26, 10);
        assert_eq!(pairs.len(), 5);
        // Point 0 at the centre, 1..=4 at equal distance: knn = 1 keeps only 1 for point 0
        // (tie broken by index), but 0 is the nearest of each of 1..=4: all four edges exist.
        let points = [0.0f32, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0];
        let pairs = grid_pairs(&points, 2, 1.1, 1);
        assert_eq!(
            pairs,
            [(0, 1), (0, 2), (0, 3), (0, 4)].into_iter().collect()
        );
    }

    #[test]
    fn empty_tiny_and_identical_inputs() {
        assert!(grid_pairs(&[], 3, 0.1, 5).is_empty());
        assert!(grid_pairs(&[0.5, 0.5, 0.5], 3, 0.1, 5).is_empty());
        assert_eq!(
            grid_pairs(&[0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 3, 0.1, 5).len(),
            1
        );
        // 40 copies of one point: all pairs, or per-point caps.
        let same = vec![0.25f32; 40 * 4];
        assert_eq!(grid_pairs(&same, 4, 0.1, 100).len(), 40 * 39 / 2);
        // knn 3 with all distances 0: N(i) is the three smallest other indices, so the pairs
        // within {0, 1, 2, 3} and every other point with 0, 1 and 2.
        assert_eq!(grid_pairs(&same, 4, 0.1, 3).len(), 6 + 36 * 3);
    }

    #[test]
    fn spread_out_points_use_wider_cells() {
        // A radius far below the extent: the cell count is capped and the result stays exact.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut points: Vec<f32> = (0..400 * 3).map(|_| rng.gen_range(-1e4f32..1e4)).collect();
        points.extend_from_slice(&[0.0, 0.0, 0.0, 1e-4, 0.0, 0.0]);
        assert!(grid_pairs(&points, 3, 1e-3, 10).contains(&(400, 401)));
    }

    #[test]
    fn eigen_decomposition_of_a_known_matrix() {
        // diag(3, 1, 2) rotated by 45 degrees in the (0, 1) plane
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let a = vec![2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 2.0];
        let pairs = symmetric_eigen(a, 3);
        let values: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        for (v, want) in values.iter().zip([3.0, 2.0, 1.0]) {
            assert!((v - want).abs() < 1e-12, "{values:?}");
        }
        let top = &pairs[0].1;
        assert!((top[0].abs() - h).abs() < 1e-12 && (top[1] - top[0]).abs() < 1e-12);
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = pairs[i].1.iter().zip(&pairs[j].1).map(|(x, y)| x * y).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    /// A cloud along a random 3-d subspace of `dim` dimensions, with a little noise off it:
    /// the shape of a trained embedding, where the grid bins on the principal axes.
    fn thin_cloud(rng: &mut ChaCha8Rng, n: usize, dim: usize) -> (Vec<f32>, Vec<Vec<f64>>) {
        let mut basis: Vec<Vec<f64>> = Vec::new();
        while basis.len() < 3 {
            let mut v: Vec<f64> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for b in &basis {
                let d: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            basis.push(v.iter().map(|x| x / norm).collect());
        }
        let mut points = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let w: Vec<f64> = (0..3)
                .map(|k| rng.gen_range(-1.0..1.0) * (3 - k) as f64)
                .collect();
            points.extend((0..dim).map(|j| {
                let on: f64 = (0..3).map(|k| w[k] * basis[k][j]).sum();
                (on + rng.gen_range(-0.01..0.01)) as f32
            }));
        }
        (points, basis)
    }

    #[test]
    fn principal_axes_find_the_spread_of_a_thin_cloud() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (points, basis) = thin_cloud(&mut rng, 2000, 12);
        let axes = principal_axes(&points, 12, 3);
        assert_eq!(axes.len(), 3);
        // widest spread first: each axis lies (almost) along the basis vector of its rank
        for (axis, b) in axes.iter().zip(&basis) {
            let dot: f64 = axis.iter().zip(b).map(|(x, y)| x * y).sum();
            assert!(dot.abs() > 0.99, "{dot}");
        }
        // the coordinate axes at three dimensions or fewer
        assert_eq!(
            principal_axes(&[1.0, 2.0, 3.0, 4.0], 2, 3),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
    }

    #[test]
    fn grid_on_principal_axes_equals_brute_force_on_thin_clouds() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for dim in [4usize, 8, 12] {
            for radius in [0.05f32, 0.2, 0.6] {
                let (points, _) = thin_cloud(&mut rng, 400, dim);
                grid_pairs(&points, dim, radius, 16);
            }
        }
    }

    #[test]
    fn knn_bound_skips_cells_and_stays_exact() {
        // Dense clouds with the radius far above the knn-th neighbour's distance: the search
        // bound tightens after the first cells; lattice points put many ties at that bound.
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for (dim, knn) in [(4usize, 3usize), (8, 7), (12, 16)] {
            let (mut points, _) = thin_cloud(&mut rng, 2500, dim);
            for _ in 0..500 {
                points.extend((0..dim).map(|_| rng.gen_range(0..6) as f32 * 0.0625));
            }
            let pairs = grid_pairs(&points, dim, 0.7, knn);
            assert!(pairs.len() >= 3000 * knn / 2, "{} pairs", pairs.len());
        }
    }

    #[test]
    fn grid_equals_brute_force_on_clouds_spread_over_more_axes_than_the_grid() {
        // five directions of comparable spread, each wider than the radius: every grid axis
        // is binned and the fifth direction is left to the distance tests
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let dim = 12;
        for radius in [0.25f32, 0.4] {
            let mut points = Vec::new();
            for _ in 0..2000 {
                let w: Vec<f32> = (0..5)
                    .map(|k| rng.gen_range(-1.0..1.0) / (1 + k / 2) as f32)
                    .collect();
                points.extend(
                    (0..dim).map(|j| w.get(j).copied().unwrap_or(0.0) + rng.gen_range(-0.01..0.01)),
                );
            }
            let pairs = grid_pairs(&points, dim, radius, 12);
            assert!(pairs.len() > 2000, "{} pairs", pairs.len());
        }
    }

    #[test]
    fn pairs_just_inside_the_radius_survive_the_f32_pre_tests() {
        // Pairs apart by (0.6 - 4 ulp, 0.8 + 2 ulp) in two dimensions: 5e-8 inside the radius
        // 1 in exact arithmetic, while f32 rounds the squared distance to 1. Far apart from
        // one another (large coordinates, coarse in f32, in the other dimensions).
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let dim = 8usize;
        let (a, b) = (
            f32::from_bits(0.6f32.to_bits() - 4),
            f32::from_bits(0.8f32.to_bits() + 2),
        );
        let inside = (a as f64).powi(2) + (b as f64).powi(2);
        assert!(inside < 1.0 && (a * a + b * b) >= 1.0, "{inside}");
        let mut points = Vec::new();
        for i in 0..150 {
            let mut base: Vec<f32> = (0..dim)
                .map(|_| 16.0 * rng.gen_range(-60..60) as f32)
                .collect();
            let (j, k) = (i % dim, (i + 1 + i / dim) % dim);
            let k = if k == j { (k + 1) % dim } else { k };
            base[j] = 0.0;
            base[k] = 0.0;
            points.extend_from_slice(&base);
            base[j] = if rng.gen_bool(0.5) { a } else { -a };
            base[k] = if rng.gen_bool(0.5) { b } else { -b };
            points.extend_from_slice(&base);
        }
        let pairs = grid_pairs(&points, dim, 1.0, 4);
        for i in 0..150u32 {
            assert!(pairs.contains(&(2 * i, 2 * i + 1)), "pair {i} lost");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn grid_equals_brute_force(
            dim in 2usize..=12,
            n in 0usize..120,
            radius in 0.05f32..1.0,
            knn in 1usize..20,
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let points = cloud(&mut rng, n, dim);
            grid_pairs(&points, dim, radius, knn);
        }
    }
}
