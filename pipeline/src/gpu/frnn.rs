//! The radius graph on the GPU: the same edge set, orientation and order as the CPU grid
//! (`crate::frnn`) and the all-pairs definition of docs/DESIGN.md, from an embedding that stays
//! on the device.
//!
//! 1. Grid: the box of the first three embedding dimensions (one small copy to the host) gives
//!    the same `GridGeometry` as on the CPU. `grid_cells` finds every point's cell and counts the
//!    cells (atomics); an exclusive prefix sum (torch) gives each cell's first slot; `grid_fill`
//!    puts every point in a slot of its cell; the coordinates are gathered in that order.
//! 2. `frnn_count`: one thread per point scans the 3x3x3 cells around its own with the f64
//!    distance of the definition and counts the points within the radius.
//! 3. Slots: `min(count, knn)` per point, offsets by a prefix sum (torch).
//! 4. `frnn_fill`: the same scan writes `N(i)`: every neighbour, or when there are more than
//!    `knn`, the nearest `knn` by (d2, index) through a max-heap in the point's slots. Each kept
//!    neighbour becomes the key `src * n + dst` of the oriented edge.
//! 5. Sorting the keys and dropping repeats (torch `unique`) gives the union of both directions
//!    in `(src, dst)` order; `src = key / n`, `dst = key % n`.
//!
//! The module `emulation` (tests) runs these steps on the host, with the slot order inside each
//! cell shuffled as the atomics may leave it, and checks them against the CPU grid and the
//! all-pairs definition.
use cudarc::driver::{DeviceRepr, PushKernelArg};
use tch::{Kind, Tensor};

use crate::error::{PipelineError, Result};
use crate::frnn::{GridGeometry, RadiusGraphConfig};
use crate::gpu::kernels::{QUERY_THREADS, THREADS};
use crate::gpu::{device_ptr, GpuRuntime};
use crate::stage::{torch_error, EventData, ExecutionContext, GraphConstruction};

/// The grid placement as the kernels read it (`struct GridParams` in kernels.cu, whose size
/// NVRTC checks against this one's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GridParams {
    pub lo: [f64; 3],
    pub cell: f64,
    pub shape: [i32; 3],
    pub dim: i32,
    pub axes: i32,
    pub unused: i32,
}

// SAFETY: plain `repr(C)` data with the layout of the CUDA struct (checked by a static_assert
// on its size in kernels.cu); passed by value as a kernel parameter.
unsafe impl DeviceRepr for GridParams {}

impl GridParams {
    pub fn new(geo: &GridGeometry, dim: usize) -> Result<Self> {
        let too_big = || {
            PipelineError::Device(format!(
                "radius graph: a grid of {:?} cells is too large for the GPU kernels",
                geo.shape
            ))
        };
        if geo.num_cells() >= i32::MAX as usize || dim > i32::MAX as usize {
            return Err(too_big());
        }
        let axis = |k: usize| i32::try_from(geo.shape[k]).map_err(|_| too_big());
        Ok(Self {
            lo: geo.lo,
            cell: geo.cell,
            shape: [axis(0)?, axis(1)?, axis(2)?],
            dim: dim as i32,
            axes: geo.axes as i32,
            unused: 0,
        })
    }
}

/// `[2, E]` edges from sorted unique keys `src * n + dst` (any device).
pub(crate) fn edges_from_keys(keys: &Tensor, n: i64) -> Result<Tensor> {
    let src = keys
        .f_floor_divide_scalar(n)
        .map_err(torch_error("graph"))?;
    let dst = keys.f_remainder(n).map_err(torch_error("graph"))?;
    Tensor::f_stack(&[src, dst], 0).map_err(torch_error("graph"))
}

/// The sorted distinct keys of `keys` (any device).
pub(crate) fn sorted_unique(keys: &Tensor) -> Result<Tensor> {
    keys.f_internal_unique2(true, false, false)
        .map(|(u, _, _)| u)
        .map_err(torch_error("graph"))
}

/// The radius graph of an `[n, D]` embedding on the runtime's device, `[2, E]` int64 there.
/// `radius_key` is feature column 0 (f32 `[n]`, same device): the orientation key.
pub fn radius_graph(
    gpu: &GpuRuntime,
    embedding: &Tensor,
    radius_key: &Tensor,
    cfg: &RadiusGraphConfig,
) -> Result<Tensor> {
    let t = torch_error("graph");
    let dev = embedding.device();
    let size = embedding.size();
    let (n, dim) = (size[0], size.get(1).copied().unwrap_or(0));
    if n < 2 || dim == 0 {
        return Tensor::f_zeros([2, 0], (Kind::Int64, dev)).map_err(t);
    }
    if n > i32::MAX as i64 / 2 {
        return Err(PipelineError::Input(format!(
            "radius graph: {n} spacepoints is too many for the GPU kernels"
        )));
    }
    if cfg.radius.is_nan() || cfg.radius <= 0.0 || cfg.knn == 0 {
        return Err(PipelineError::Config(format!(
            "radius graph: radius {} and knn {} must be positive",
            cfg.radius, cfg.knn
        )));
    }
    let d = gpu.device();
    let points = embedding
        .f_to_kind(Kind::Float)
        .and_then(|e| e.f_contiguous())
        .map_err(&t)?;
    let radius_key = radius_key.f_contiguous().map_err(&t)?;
    let axes = dim.min(3);

    // The grid's box and a finiteness check in one copy to the host.
    let head = points.f_narrow(1, 0, axes).map_err(&t)?;
    let stats = Tensor::f_cat(
        &[
            head.f_amin(0, false).map_err(&t)?,
            head.f_amax(0, false).map_err(&t)?,
            points
                .f_isfinite()
                .and_then(|f| f.f_all())
                .and_then(|f| f.f_view([1]))
                .and_then(|f| f.f_to_kind(Kind::Float))
                .map_err(&t)?,
        ],
        0,
    )
    .and_then(|s| s.f_to_kind(Kind::Double))
    .and_then(|s| s.f_to_device(tch::Device::Cpu))
    .and_then(|s| Vec::<f64>::try_from(&s))
    .map_err(&t)?;
    let axes = axes as usize;
    if stats[2 * axes] != 1.0 {
        return Err(non_finite(&points, dim));
    }
    let (mut lo, mut hi) = ([0.0f64; 3], [0.0f64; 3]);
    lo[..axes].copy_from_slice(&stats[..axes]);
    hi[..axes].copy_from_slice(&stats[axes..2 * axes]);
    let geo = GridGeometry::new(lo, hi, axes, n as usize, cfg.radius);
    let params = GridParams::new(&geo, dim as usize)?;
    let ncells = geo.num_cells() as i64;
    let k = gpu.kernels();
    let int = (Kind::Int, dev);
    let n32 = n as i32;

    // Counting sort of the points by cell.
    let cell_of_point = Tensor::f_empty([n], int).map_err(&t)?;
    let cell_count = Tensor::f_zeros([ncells], int).map_err(&t)?;
    let p_points = device_ptr(&points, Kind::Float, d, "embedding")?;
    let p_cell_of = device_ptr(&cell_of_point, Kind::Int, d, "cell_of_point")?;
    let p_count = device_ptr(&cell_count, Kind::Int, d, "cell_count")?;
    gpu.launch(&k.grid_cells, n as usize, THREADS, "grid_cells", |a| {
        a.arg(&n32)
            .arg(&p_points)
            .arg(&params)
            .arg(&p_cell_of)
            .arg(&p_count);
    })?;
    let cell_start = Tensor::f_cat(
        &[
            Tensor::f_zeros([1], int).map_err(&t)?,
            cell_count.f_cumsum(0, Kind::Int).map_err(&t)?,
        ],
        0,
    )
    .map_err(&t)?;
    // A copy: grid_fill advances the cursors in place.
    let cursor = cell_start
        .f_narrow(0, 0, ncells)
        .and_then(|c| c.f_detach_copy())
        .and_then(|c| c.f_contiguous())
        .map_err(&t)?;
    let order = Tensor::f_empty([n], int).map_err(&t)?;
    let p_cursor = device_ptr(&cursor, Kind::Int, d, "cursor")?;
    let p_order = device_ptr(&order, Kind::Int, d, "order")?;
    gpu.launch(&k.grid_fill, n as usize, THREADS, "grid_fill", |a| {
        a.arg(&n32).arg(&p_cell_of).arg(&p_cursor).arg(&p_order);
    })?;
    let sorted = points
        .f_index_select(0, &order)
        .and_then(|s| s.f_contiguous())
        .map_err(&t)?;

    // Count pass, slots, fill pass.
    let r2 = cfg.radius as f64 * cfg.radius as f64;
    let knn = i32::try_from(cfg.knn).unwrap_or(i32::MAX);
    let count = Tensor::f_empty([n], int).map_err(&t)?;
    let p_sorted = device_ptr(&sorted, Kind::Float, d, "sorted embedding")?;
    let p_start = device_ptr(&cell_start, Kind::Int, d, "cell_start")?;
    let p_n_count = device_ptr(&count, Kind::Int, d, "count")?;
    gpu.launch(
        &k.frnn_count,
        n as usize,
        QUERY_THREADS,
        "frnn_count",
        |a| {
            a.arg(&n32)
                .arg(&p_sorted)
                .arg(&p_start)
                .arg(&params)
                .arg(&r2)
                .arg(&p_n_count);
        },
    )?;
    let kept = count
        .f_clamp_max(knn as i64)
        .and_then(|c| c.f_to_kind(Kind::Int64))
        .map_err(&t)?;
    let ends = kept.f_cumsum(0, Kind::Int64).map_err(&t)?;
    let offset = ends
        .f_sub(&kept)
        .and_then(|o| o.f_contiguous())
        .map_err(&t)?;
    let totals = Tensor::f_stack(
        &[
            ends.f_narrow(0, n - 1, 1).map_err(&t)?,
            count
                .f_max()
                .and_then(|m| m.f_to_kind(Kind::Int64))
                .and_then(|m| m.f_view([1]))
                .map_err(&t)?,
        ],
        0,
    )
    .and_then(|s| s.f_to_device(tch::Device::Cpu))
    .and_then(|s| s.f_view([-1]))
    .and_then(|s| Vec::<i64>::try_from(&s))
    .map_err(&t)?;
    let (slots, max_count) = (totals[0], totals[1]);
    if slots == 0 {
        return Tensor::f_zeros([2, 0], (Kind::Int64, dev)).map_err(t);
    }
    let keys = Tensor::f_empty([slots], (Kind::Int64, dev)).map_err(&t)?;
    // The heap's distances are needed only where a list is cut at knn.
    let heap_len = if max_count > knn as i64 { slots } else { 1 };
    let heap_d2 = Tensor::f_empty([heap_len], (Kind::Double, dev)).map_err(&t)?;
    let p_offset = device_ptr(&offset, Kind::Int64, d, "offset")?;
    let p_key = device_ptr(&radius_key, Kind::Float, d, "radius key")?;
    let p_heap = device_ptr(&heap_d2, Kind::Double, d, "heap")?;
    let p_keys = device_ptr(&keys, Kind::Int64, d, "edge keys")?;
    gpu.launch(&k.frnn_fill, n as usize, QUERY_THREADS, "frnn_fill", |a| {
        a.arg(&n32)
            .arg(&p_sorted)
            .arg(&p_order)
            .arg(&p_start)
            .arg(&params)
            .arg(&r2)
            .arg(&knn)
            .arg(&p_n_count)
            .arg(&p_offset)
            .arg(&p_key)
            .arg(&p_heap)
            .arg(&p_keys);
    })?;
    edges_from_keys(&sorted_unique(&keys)?, n)
}

/// The error for a non-finite embedding value, naming the first spacepoint (as the CPU does).
fn non_finite(points: &Tensor, dim: i64) -> PipelineError {
    let first = points
        .f_view([-1])
        .and_then(|p| p.f_isfinite())
        .and_then(|f| f.f_logical_not())
        .and_then(|f| f.f_argwhere())
        .and_then(|w| w.f_to_device(tch::Device::Cpu))
        .ok()
        .and_then(|w| w.f_view([-1]).ok())
        .and_then(|w| Vec::<i64>::try_from(&w).ok())
        .and_then(|w| w.first().copied());
    match first {
        Some(i) => {
            let value = points
                .f_view([-1])
                .and_then(|p| p.f_double_value(&[i]))
                .unwrap_or(f64::NAN);
            PipelineError::Input(format!(
                "the embedding model gave a non-finite value ({value}) for spacepoint {}",
                i / dim.max(1)
            ))
        }
        None => PipelineError::Input("the embedding model gave a non-finite value".into()),
    }
}

/// The radius graph stage on the GPU: needs `embedding` (on the device), sets `edge_index`
/// (on the device).
pub struct CudaRadiusGraph {
    pub cfg: RadiusGraphConfig,
}

impl GraphConstruction for CudaRadiusGraph {
    fn build(&self, ctx: &ExecutionContext, event: &mut EventData) -> Result<()> {
        let gpu = ctx.gpu().ok_or_else(|| {
            PipelineError::Device("the GPU radius graph needs a CUDA execution context".into())
        })?;
        let embedding = event.embedding.as_ref().ok_or_else(|| {
            PipelineError::Config("the radius graph needs the embedding stage to run first".into())
        })?;
        let radius_key = event.radius_key_on_device.as_ref().ok_or_else(|| {
            PipelineError::Device("the GPU radius graph needs the radius key on the device".into())
        })?;
        event.edge_index = radius_graph(gpu, embedding, radius_key, &self.cfg)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod emulation {
    //! The kernels of `kernels.cu` for the radius graph, step for step on the host.
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// `cell_axis` of kernels.cu.
    fn cell_axis(x: f32, lo: f64, cell: f64, cells: i32) -> i32 {
        let c = ((x as f64 - lo) / cell).floor();
        c.max(0.0).min((cells - 1) as f64) as i32
    }

    fn cell_coords(g: &GridParams, p: &[f32]) -> [i32; 3] {
        let mut c = [0i32; 3];
        for k in 0..g.axes as usize {
            c[k] = cell_axis(p[k], g.lo[k], g.cell, g.shape[k]);
        }
        c
    }

    fn linear_cell(g: &GridParams, c0: i32, c1: i32, c2: i32) -> usize {
        ((c0 * g.shape[1] + c1) * g.shape[2] + c2) as usize
    }

    /// `for_each_within` of kernels.cu (the distance is the CPU's `distance2_below`, whose
    /// operations the kernel spells with unfused intrinsics).
    fn for_each_within(
        g: &GridParams,
        sorted: &[f32],
        cell_start: &[i32],
        q: usize,
        r2: f64,
        mut visit: impl FnMut(usize, f64),
    ) {
        let dim = g.dim as usize;
        let pq = &sorted[q * dim..(q + 1) * dim];
        let c = cell_coords(g, pq);
        let lo: Vec<i32> = (0..3).map(|k| (c[k] - 1).max(0)).collect();
        let hi: Vec<i32> = (0..3).map(|k| (c[k] + 1).min(g.shape[k] - 1)).collect();
        for c0 in lo[0]..=hi[0] {
            for c1 in lo[1]..=hi[1] {
                let from = cell_start[linear_cell(g, c0, c1, lo[2])] as usize;
                let to = cell_start[linear_cell(g, c0, c1, hi[2]) + 1] as usize;
                for p in from..to {
                    if p == q {
                        continue;
                    }
                    let b = &sorted[p * dim..(p + 1) * dim];
                    if let Some(d2) = crate::frnn::distance2_below(pq, b, r2) {
                        visit(p, d2);
                    }
                }
            }
        }
    }

    fn key_less(da: f64, ja: i64, db: f64, jb: i64) -> bool {
        crate::frnn::key_less((da, ja as u32), (db, jb as u32))
    }

    fn heap_push(d2: &mut [f64], j: &mut [i64], size: usize, nd: f64, nj: i64) {
        let mut k = size;
        while k > 0 {
            let parent = (k - 1) / 2;
            if !key_less(d2[parent], j[parent], nd, nj) {
                break;
            }
            d2[k] = d2[parent];
            j[k] = j[parent];
            k = parent;
        }
        d2[k] = nd;
        j[k] = nj;
    }

    fn heap_replace_top(d2: &mut [f64], j: &mut [i64], size: usize, nd: f64, nj: i64) {
        let mut k = 0;
        loop {
            let mut child = 2 * k + 1;
            if child >= size {
                break;
            }
            if child + 1 < size && key_less(d2[child], j[child], d2[child + 1], j[child + 1]) {
                child += 1;
            }
            if !key_less(nd, nj, d2[child], j[child]) {
                break;
            }
            d2[k] = d2[child];
            j[k] = j[child];
            k = child;
        }
        d2[k] = nd;
        j[k] = nj;
    }

    /// All passes of `radius_graph` on the host; `seed` shuffles the threads of `grid_fill`
    /// (the order the atomics hand out slots in). Returns `[src..., dst...]`.
    pub fn radius_graph(
        points: &[f32],
        dim: usize,
        radius_key: &[f32],
        cfg: &RadiusGraphConfig,
        seed: u64,
    ) -> Vec<i64> {
        let n = points.len() / dim;
        if n < 2 {
            return Vec::new();
        }
        let (lo, hi) = GridGeometry::bounds(points, dim);
        let geo = GridGeometry::new(lo, hi, dim.min(3), n, cfg.radius);
        let g = GridParams::new(&geo, dim).unwrap();
        let ncells = geo.num_cells();

        // grid_cells
        let mut cell_of_point = vec![0i32; n];
        let mut cell_count = vec![0i32; ncells];
        for i in 0..n {
            let c = cell_coords(&g, &points[i * dim..(i + 1) * dim]);
            let cell = linear_cell(&g, c[0], c[1], c[2]);
            cell_of_point[i] = cell as i32;
            cell_count[cell] += 1;
        }
        // exclusive prefix sum (torch cumsum)
        let mut cell_start = vec![0i32; ncells + 1];
        for c in 0..ncells {
            cell_start[c + 1] = cell_start[c] + cell_count[c];
        }
        // grid_fill, threads in a random order
        let mut cursor = cell_start[..ncells].to_vec();
        let mut order = vec![0i32; n];
        let mut threads: Vec<usize> = (0..n).collect();
        threads.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        for i in threads {
            let c = cell_of_point[i] as usize;
            order[cursor[c] as usize] = i as i32;
            cursor[c] += 1;
        }
        let mut sorted = vec![0f32; n * dim];
        for (pos, &i) in order.iter().enumerate() {
            let i = i as usize;
            sorted[pos * dim..(pos + 1) * dim].copy_from_slice(&points[i * dim..(i + 1) * dim]);
        }

        // frnn_count
        let r2 = cfg.radius as f64 * cfg.radius as f64;
        let knn = cfg.knn;
        let count: Vec<usize> = (0..n)
            .map(|q| {
                let mut found = 0;
                for_each_within(&g, &sorted, &cell_start, q, r2, |_, _| found += 1);
                found
            })
            .collect();
        // slots (torch clamp, cumsum)
        let mut offset = vec![0usize; n + 1];
        for q in 0..n {
            offset[q + 1] = offset[q] + count[q].min(knn);
        }
        let slots = offset[n];
        let mut keys = vec![0i64; slots];
        let mut heap_d2 = vec![0f64; slots];

        // frnn_fill
        for q in 0..n {
            let base = offset[q];
            let cut = count[q] > knn;
            let mut size = 0usize;
            {
                let out = &mut keys[base..offset[q + 1]];
                let hd = &mut heap_d2[base..offset[q + 1]];
                for_each_within(&g, &sorted, &cell_start, q, r2, |p, d2| {
                    let j = order[p] as i64;
                    if !cut {
                        out[size] = j;
                        size += 1;
                    } else if size < knn {
                        heap_push(hd, out, size, d2, j);
                        size += 1;
                    } else if key_less(d2, j, hd[0], out[0]) {
                        heap_replace_top(hd, out, size, d2, j);
                    }
                });
            }
            let i = order[q] as i64;
            let ri = radius_key[i as usize];
            for key in &mut keys[base..base + size] {
                let j = *key;
                let rj = radius_key[j as usize];
                let i_is_src = ri < rj || (ri == rj && i < j);
                *key = if i_is_src {
                    i * n as i64 + j
                } else {
                    j * n as i64 + i
                };
            }
        }
        // sorted_unique and edges_from_keys: the production torch code, on CPU tensors.
        let keys = Tensor::from_slice(&keys);
        let edges = edges_from_keys(&sorted_unique(&keys).unwrap(), n as i64).unwrap();
        Vec::<i64>::try_from(&edges.view([-1])).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::edges::orient_and_sort;
    use crate::frnn::tests::{brute_force, cloud};

    /// The emulated kernels equal the CPU grid and the all-pairs definition, whatever order
    /// the atomics fill the cells in.
    fn check(points: &[f32], dim: usize, radius: f32, knn: usize, seed: u64) {
        let n = points.len() / dim;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Radius keys with ties (orientation falls back to the index).
        let key: Vec<f32> = (0..n).map(|_| rng.gen_range(0..7) as f32 * 0.1).collect();
        let cfg = RadiusGraphConfig { radius, knn };
        let got = emulation::radius_graph(points, dim, &key, &cfg, seed);
        let cpu = crate::frnn::radius_graph(points, dim, &key, &cfg);
        assert_eq!(got, cpu, "dim {dim} radius {radius} knn {knn} n {n}");
        let pairs: Vec<[u32; 2]> = brute_force(points, dim, radius, knn)
            .into_iter()
            .map(|(a, b)| [a, b])
            .collect();
        assert_eq!(got, orient_and_sort(&key, &pairs));
    }

    #[test]
    fn grid_params_layout_matches_the_kernels() {
        // kernels.cu asserts sizeof(GridParams) == this (checked when NVRTC compiles it).
        assert_eq!(std::mem::size_of::<GridParams>(), 56);
        assert_eq!(std::mem::align_of::<GridParams>(), 8);
        assert!(crate::gpu::kernel_source().contains("#define EXATRKX_GRID_PARAMS_BYTES 56\n"));
    }

    #[test]
    fn emulated_kernels_equal_the_definition_on_random_clouds() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for dim in [1usize, 2, 3, 4, 8, 12] {
            for radius in [0.0625f32, 0.125, 0.3, 0.75] {
                // knn 1 and 3 make most lists go through the heap; 1000 never.
                for knn in [1usize, 3, 10, 1000] {
                    let n = rng.gen_range(30..250);
                    let points = cloud(&mut rng, n, dim);
                    check(&points, dim, radius, knn, rng.gen());
                }
            }
        }
    }

    #[test]
    fn emulated_kernels_on_ties_duplicates_and_tiny_inputs() {
        // All points identical: every list has ties in d2, broken by index.
        let same = vec![0.25f32; 40 * 4];
        for knn in [1, 3, 39, 100] {
            check(&same, 4, 0.1, knn, 5);
        }
        // Equidistant neighbours, distance equal to the radius excluded.
        let line: Vec<f32> = (0..6).map(|i| i as f32 * 0.25).collect();
        check(&line, 1, 0.25, 10, 1);
        check(&line, 1, 0.26, 1, 2);
        check(&[], 3, 0.1, 5, 0);
        check(&[0.5, 0.5, 0.5], 3, 0.1, 5, 0);
        // A box much wider than the radius: capped cell count, wider cells.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut spread: Vec<f32> = (0..300 * 3).map(|_| rng.gen_range(-1e4f32..1e4)).collect();
        spread.extend_from_slice(&[0.0, 0.0, 0.0, 1e-4, 0.0, 0.0]);
        check(&spread, 3, 1e-3, 10, 9);
    }

    #[test]
    fn key_decoding_and_dedup_are_the_edge_convention() {
        // Keys from both directions of three pairs, repeated, out of order.
        let n = 5i64;
        let keys = Tensor::from_slice(&[4 * n + 1, 2 * n + 3, n + 2, 4 * n + 1, n + 2, 2 * n + 3]);
        let edges = edges_from_keys(&sorted_unique(&keys).unwrap(), n).unwrap();
        assert_eq!(edges.size(), [2, 3]);
        let flat = Vec::<i64>::try_from(&edges.view([-1])).unwrap();
        assert_eq!(flat, [1, 2, 4, 2, 3, 1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn emulated_kernels_equal_the_cpu_grid(
            dim in 1usize..=10,
            n in 0usize..150,
            radius in 0.05f32..1.0,
            knn in 1usize..12,
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let points = cloud(&mut rng, n, dim);
            check(&points, dim, radius, knn, seed);
        }
    }
}
