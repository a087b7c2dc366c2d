//! Fixed-radius neighbours in the embedding space on a grid: the radius graph of docs/DESIGN.md,
//! exactly (same edge set as the all-pairs definition), in time linear in the spacepoints.
//!
//! The points are counting-sorted into cubic cells over the first three embedding dimensions.
//! A cell is slightly wider than the radius, so every neighbour of a point lies in the 3x3x3
//! block of cells around it, and every candidate there is tested with the full-dimension f64
//! distance of the definition. Queries run in parallel over blocks of the sorted points.
use rayon::prelude::*;

use crate::edges::orient_and_sort;
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
type Key = (f64, u32);

#[inline]
fn key_less(a: Key, b: Key) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Squared distance accumulated in f64 over the dimensions in order, when below `r2`.
/// Stopping early is exact: the partial sums of non-negative terms never decrease.
#[inline]
fn distance2_below(a: &[f32], b: &[f32], r2: f64) -> Option<f64> {
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

/// Relative widening of the cells beyond the radius: covers the rounding of the cell index
/// computation, far above f64 precision and far below any effect on speed.
const CELL_MARGIN: f64 = 1e-6;
/// Points per block of queries handed to one rayon task.
const QUERY_BLOCK: usize = 512;

/// The counting-sorted grid over the first (up to) three dimensions.
struct Grid {
    dim: usize,
    lo: [f64; 3],
    cell: f64,
    shape: [usize; 3],
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
        let grid_dims = dim.min(3);
        let mut lo = [0.0f64; 3];
        let mut hi = [0.0f64; 3];
        for k in 0..grid_dims {
            let (mut a, mut b) = (f64::INFINITY, f64::NEG_INFINITY);
            for p in points.chunks_exact(dim) {
                a = a.min(p[k] as f64);
                b = b.max(p[k] as f64);
            }
            lo[k] = a;
            hi[k] = b;
        }
        // Cells at least the radius wide; wider when the box would need too many cells.
        let max_cells = (8 * n).max(4096) as f64;
        let mut cell = radius as f64 * (1.0 + CELL_MARGIN);
        let mut shape = [1usize; 3];
        loop {
            let mut total = 1.0f64;
            for k in 0..grid_dims {
                let cells = ((hi[k] - lo[k]) / cell).floor() + 1.0;
                total *= cells;
                shape[k] = cells.min(usize::MAX as f64 / 4.0) as usize;
            }
            if total <= max_cells {
                break;
            }
            cell *= (total / max_cells).powf(1.0 / grid_dims as f64) * 1.01;
        }
        let mut grid = Grid {
            dim,
            lo,
            cell,
            shape,
            cell_start: Vec::new(),
            order: Vec::new(),
            sorted: Vec::new(),
        };
        let ncells = shape.iter().product::<usize>();
        let cells: Vec<u32> = points
            .par_chunks_exact(dim)
            .map(|p| grid.linear(grid.cell_of(p)) as u32)
            .collect();
        let mut start = vec![0u32; ncells + 1];
        for &c in &cells {
            start[c as usize + 1] += 1;
        }
        for c in 0..ncells {
            start[c + 1] += start[c];
        }
        let mut fill = start.clone();
        let mut order = vec![0u32; n];
        for (i, &c) in cells.iter().enumerate() {
            let slot = &mut fill[c as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        let mut sorted = vec![0f32; n * dim];
        sorted
            .par_chunks_exact_mut(dim)
            .zip(order.par_iter())
            .for_each(|(dst, &i)| {
                dst.copy_from_slice(&points[i as usize * dim..(i as usize + 1) * dim])
            });
        grid.cell_start = start;
        grid.order = order;
        grid.sorted = sorted;
        grid
    }

    #[inline]
    fn cell_of(&self, p: &[f32]) -> [usize; 3] {
        let mut c = [0usize; 3];
        for k in 0..self.dim.min(3) {
            let x = ((p[k] as f64 - self.lo[k]) / self.cell).floor();
            c[k] = (x.max(0.0) as usize).min(self.shape[k] - 1);
        }
        c
    }

    #[inline]
    fn linear(&self, c: [usize; 3]) -> usize {
        (c[0] * self.shape[1] + c[1]) * self.shape[2] + c[2]
    }

    fn point(&self, pos: usize) -> &[f32] {
        &self.sorted[pos * self.dim..(pos + 1) * self.dim]
    }
}

/// Neighbour lists of one block of queries.
struct BlockNeighbours {
    /// Original index of each query and the number of its neighbours.
    queries: Vec<(u32, u32)>,
    /// The neighbours, query after query.
    neighbours: Vec<Key>,
    /// Queries whose list was cut at `knn`, with the key of the last neighbour kept.
    truncated: Vec<(u32, Key)>,
}

fn query_block(
    grid: &Grid,
    positions: std::ops::Range<usize>,
    r2: f64,
    knn: usize,
) -> BlockNeighbours {
    let mut out = BlockNeighbours {
        queries: Vec::with_capacity(positions.len()),
        neighbours: Vec::new(),
        truncated: Vec::new(),
    };
    let lo_hi = |c: usize, k: usize| (c.saturating_sub(1), (c + 1).min(grid.shape[k] - 1));
    for pos in positions {
        let q = grid.point(pos);
        let qid = grid.order[pos];
        let c = grid.cell_of(q);
        let (a0, b0) = lo_hi(c[0], 0);
        let (a1, b1) = lo_hi(c[1], 1);
        let (a2, b2) = lo_hi(c[2], 2);
        let first = out.neighbours.len();
        for c0 in a0..=b0 {
            for c1 in a1..=b1 {
                // The cells along the last grid axis are adjacent in memory: one range.
                let from = grid.cell_start[grid.linear([c0, c1, a2])] as usize;
                let to = grid.cell_start[grid.linear([c0, c1, b2]) + 1] as usize;
                for cand in from..to {
                    if cand == pos {
                        continue;
                    }
                    if let Some(d2) = distance2_below(q, grid.point(cand), r2) {
                        out.neighbours.push((d2, grid.order[cand]));
                    }
                }
            }
        }
        let list = &mut out.neighbours[first..];
        if list.len() > knn {
            list.select_nth_unstable_by(knn - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let last = list[knn - 1];
            out.neighbours.truncate(first + knn);
            out.truncated.push((qid, last));
        }
        out.queries
            .push((qid, (out.neighbours.len() - first) as u32));
    }
    out
}

/// Unordered neighbour pairs `[i, j]` of the radius graph of docs/DESIGN.md (each pair once,
/// in no particular order). `points` holds `dim` f32 coordinates per point, all finite.
pub fn radius_pairs(points: &[f32], dim: usize, cfg: &RadiusGraphConfig) -> Vec<[u32; 2]> {
    assert!(dim > 0 && cfg.radius > 0.0 && cfg.knn > 0);
    let n = points.len() / dim;
    if n < 2 {
        return Vec::new();
    }
    let r = cfg.radius as f64;
    let r2 = r * r;
    let grid = Grid::new(points, dim, cfg.radius);
    let blocks: Vec<BlockNeighbours> = (0..n.div_ceil(QUERY_BLOCK))
        .into_par_iter()
        .map(|b| {
            query_block(
                &grid,
                b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n),
                r2,
                cfg.knn,
            )
        })
        .collect();

    // The key of the last neighbour kept by each truncated list: `i` is in N(j) exactly when
    // (d2(i, j), i) does not come after it.
    let mut last_kept = vec![(f64::INFINITY, u32::MAX); n];
    for block in &blocks {
        for &(qid, key) in &block.truncated {
            last_kept[qid as usize] = key;
        }
    }
    // Pair {i, j} with j in N(i) is emitted by i when i < j, or when i is not in N(j) (then j
    // does not emit it): each pair of the union exactly once.
    blocks
        .par_iter()
        .map(|block| {
            let mut pairs = Vec::with_capacity(block.neighbours.len() / 2 + 1);
            let mut next = 0usize;
            for &(i, count) in &block.queries {
                for &(d2, j) in &block.neighbours[next..next + count as usize] {
                    if i < j || key_less(last_kept[j as usize], (d2, i)) {
                        pairs.push([i, j]);
                    }
                }
                next += count as usize;
            }
            pairs
        })
        .flatten_iter()
        .collect()
}

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
        let pairs = if dim == 0 {
            Vec::new()
        } else {
            radius_pairs(&points, dim, &self.cfg)
        };
        let index = orient_and_sort(&event.radius_key, &pairs);
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

    fn grid_pairs(points: &[f32], dim: usize, radius: f32, knn: usize) -> BTreeSet<(u32, u32)> {
        let pairs = radius_pairs(points, dim, &RadiusGraphConfig { radius, knn });
        let set: BTreeSet<(u32, u32)> = pairs.iter().map(|&[a, b]| (a.min(b), a.max(b))).collect();
        assert_eq!(set.len(), pairs.len(), "a pair was emitted twice");
        set
    }

    /// Random clouds with clusters, exact duplicates and points on a lattice (exact ties).
    fn cloud(rng: &mut ChaCha8Rng, n: usize, dim: usize) -> Vec<f32> {
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
                    assert_eq!(
                        grid_pairs(&points, dim, radius, knn),
                        brute_force(&points, dim, radius, knn),
                        "dim {dim} radius {radius} knn {knn} n {n}"
                    );
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
        assert_eq!(pairs, brute_force(&points, 2, 1.1, 1));
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
        assert_eq!(grid_pairs(&same, 4, 0.1, 3), brute_force(&same, 4, 0.1, 3));
    }

    #[test]
    fn spread_out_points_use_wider_cells() {
        // A radius far below the extent: the cell count is capped and the result stays exact.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut points: Vec<f32> = (0..400 * 3).map(|_| rng.gen_range(-1e4f32..1e4)).collect();
        points.extend_from_slice(&[0.0, 0.0, 0.0, 1e-4, 0.0, 0.0]);
        let got = grid_pairs(&points, 3, 1e-3, 10);
        assert_eq!(got, brute_force(&points, 3, 1e-3, 10));
        assert!(got.contains(&(400, 401)));
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
            prop_assert_eq!(grid_pairs(&points, dim, radius, knn), brute_force(&points, dim, radius, knn));
        }
    }
}
