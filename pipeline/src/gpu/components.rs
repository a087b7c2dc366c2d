//! Connected components on the GPU, with the labels of the CPU (`track_building.rs`).
//!
//! `cc_hook` (one thread per edge) is a lock-free union-find: it finds both ends' roots (with
//! path halving) and hooks the larger root under the smaller with a compare-and-swap, retrying
//! from the new root when another thread got there first. Links always go from a larger index
//! to a smaller one and a component's smallest spacepoint can never be hooked, so when every
//! hook is done each component's root is its smallest spacepoint, whatever the interleaving.
//! `cc_compress` then stores every spacepoint's root. The labels follow with torch ops on the
//! device: component sizes, tracks = roots of large enough components, numbered in index order
//! (a cumulative sum), which is the CPU's numbering by smallest spacepoint. Only the labels come
//! back to the host.
//!
//! The module `emulation` (tests) runs the hook threads as state machines interleaved at every
//! memory access in random orders and checks the result against the CPU union-find.
use cudarc::driver::PushKernelArg;
use tch::{Kind, Tensor};

use crate::error::{PipelineError, Result};
use crate::gpu::kernels::THREADS;
use crate::gpu::{device_ptr, GpuRuntime};
use crate::stage::{
    host_slice, torch_error, EventData, ExecutionContext, TrackBuilding, TrackLabels,
};

/// Track labels from the component root of every spacepoint (int64 `[n]`, any device): roots
/// of components with at least `max(min_track_length, 2)` spacepoints are tracks, numbered in
/// index order; the others give -1.
pub(crate) fn labels_from_roots(roots: &Tensor, min_track_length: usize) -> Result<Tensor> {
    let t = torch_error("tracks");
    let n = roots.size()[0];
    let dev = roots.device();
    let ones = Tensor::f_ones([n], (Kind::Int64, dev)).map_err(&t)?;
    let sizes = Tensor::f_zeros([n], (Kind::Int64, dev))
        .and_then(|z| z.f_index_add(0, roots, &ones))
        .map_err(&t)?;
    let is_track = sizes.f_ge(min_track_length.max(2) as i64).map_err(&t)?;
    let number = is_track
        .f_cumsum(0, Kind::Int64)
        .map_err(&t)?
        .f_sub_scalar(1)
        .map_err(&t)?;
    let track_of_root = number.f_index_select(0, roots).map_err(&t)?;
    let keep = is_track.f_index_select(0, roots).map_err(&t)?;
    track_of_root.f_where_scalarother(&keep, -1).map_err(t)
}

/// Component root of every spacepoint of the graph `edge_index` (`[2, E]` int64 on the
/// runtime's device) over `n` spacepoints: int64 `[n]` on the device.
pub fn component_roots(gpu: &GpuRuntime, n: usize, edge_index: &Tensor) -> Result<Tensor> {
    let t = torch_error("tracks");
    let d = gpu.device();
    let dev = edge_index.device();
    if n > i32::MAX as usize {
        return Err(PipelineError::Input(format!(
            "connected components: {n} spacepoints is too many for the GPU kernels"
        )));
    }
    let parent = Tensor::f_arange(n as i64, (Kind::Int, dev)).map_err(&t)?;
    let edges = edge_index.f_contiguous().map_err(&t)?;
    let e = edges.size().get(1).copied().unwrap_or(0);
    let k = gpu.kernels();
    let p_parent = device_ptr(&parent, Kind::Int, d, "parent")?;
    if e > 0 {
        let p_src = device_ptr(&edges, Kind::Int64, d, "edge_index")?;
        let p_dst = p_src + (e as u64) * std::mem::size_of::<i64>() as u64;
        gpu.launch(&k.cc_hook, e as usize, THREADS, "cc_hook", |a| {
            a.arg(&e).arg(&p_src).arg(&p_dst).arg(&p_parent);
        })?;
    }
    let n32 = n as i32;
    gpu.launch(&k.cc_compress, n, THREADS, "cc_compress", |a| {
        a.arg(&n32).arg(&p_parent);
    })?;
    parent.f_to_kind(Kind::Int64).map_err(t)
}

/// Connected components on the GPU; the labels (one copy) come back to the host.
pub fn connected_components(
    gpu: &GpuRuntime,
    n: usize,
    edge_index: &Tensor,
    min_track_length: usize,
) -> Result<TrackLabels> {
    if n == 0 {
        return Ok(TrackLabels {
            labels: Vec::new(),
            num_tracks: 0,
            second_pass: Vec::new(),
        });
    }
    let roots = component_roots(gpu, n, edge_index)?;
    let labels = labels_from_roots(&roots, min_track_length)?;
    let labels = host_slice::<i64>(&labels, "tracks")?.to_vec();
    let num_tracks = labels.iter().max().map_or(0, |&m| (m + 1).max(0) as usize);
    Ok(TrackLabels {
        labels,
        num_tracks,
        second_pass: vec![false; num_tracks],
    })
}

/// The connected-components stage on the GPU.
pub struct CudaConnectedComponents {
    pub min_track_length: usize,
}

impl TrackBuilding for CudaConnectedComponents {
    fn build_tracks(&self, ctx: &ExecutionContext, event: &EventData) -> Result<TrackLabels> {
        let gpu = ctx.gpu().ok_or_else(|| {
            PipelineError::Device(
                "the GPU connected components need a CUDA execution context".into(),
            )
        })?;
        connected_components(
            gpu,
            event.num_spacepoints(),
            &event.edge_index,
            self.min_track_length,
        )
    }
}

#[cfg(test)]
mod emulation {
    //! `cc_hook` and `cc_compress` of kernels.cu as state machines: one step is one memory
    //! access (a load, a store or the compare-and-swap), and a seeded scheduler interleaves the
    //! edge threads step by step.
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `find_root` in progress: at `x`, about to load `parent[x]`, or holding the loaded parent
    /// and about to load the grandparent, or about to store the grandparent (path halving).
    #[derive(Clone, Copy, Debug)]
    enum Find {
        LoadParent { x: i32 },
        LoadGrand { x: i32, p: i32 },
        StoreGrand { x: i32, grand: i32 },
    }

    /// One `cc_hook` thread.
    #[derive(Clone, Copy, Debug)]
    enum Hook {
        /// Finding `u` (the root from the first end); `second` is where `v`'s search starts.
        FirstRoot {
            find: Find,
            second: i32,
        },
        /// Finding `v` with `u` known.
        SecondRoot {
            u: i32,
            find: Find,
        },
        /// About to compare-and-swap `parent[max(u, v)]`.
        Cas {
            u: i32,
            v: i32,
        },
        Done,
    }

    /// One step of a find; `Ok(root)` when it ended.
    fn step_find(parent: &mut [i32], find: Find) -> Result<i32, Find> {
        match find {
            Find::LoadParent { x } => {
                let p = parent[x as usize];
                if p == x {
                    Ok(x)
                } else {
                    Err(Find::LoadGrand { x, p })
                }
            }
            Find::LoadGrand { x, p } => {
                let grand = parent[p as usize];
                if grand != p {
                    Err(Find::StoreGrand { x, grand })
                } else {
                    Err(Find::LoadParent { x: grand })
                }
            }
            Find::StoreGrand { x, grand } => {
                parent[x as usize] = grand;
                Err(Find::LoadParent { x: grand })
            }
        }
    }

    fn step(parent: &mut [i32], h: Hook) -> Hook {
        match h {
            Hook::FirstRoot { find, second } => match step_find(parent, find) {
                Ok(u) => Hook::SecondRoot {
                    u,
                    find: Find::LoadParent { x: second },
                },
                Err(find) => Hook::FirstRoot { find, second },
            },
            Hook::SecondRoot { u, find } => match step_find(parent, find) {
                Ok(v) if v == u => Hook::Done,
                Ok(v) => Hook::Cas { u, v },
                Err(find) => Hook::SecondRoot { u, find },
            },
            Hook::Cas { u, v } => {
                let (lo, hi) = (u.min(v), u.max(v));
                let seen = parent[hi as usize];
                if seen == hi {
                    parent[hi as usize] = lo;
                    Hook::Done
                } else {
                    // u = find(seen), v = find(lo), then loop.
                    Hook::FirstRoot {
                        find: Find::LoadParent { x: seen },
                        second: lo,
                    }
                }
            }
            Hook::Done => Hook::Done,
        }
    }

    /// Roots after `cc_hook` over all edges (interleaved by `seed`) and `cc_compress`.
    pub fn component_roots(n: usize, src: &[i64], dst: &[i64], seed: u64) -> Vec<i64> {
        let mut parent: Vec<i32> = (0..n as i32).collect();
        let mut threads: Vec<Hook> = src
            .iter()
            .zip(dst)
            .map(|(&s, &d)| Hook::FirstRoot {
                find: Find::LoadParent { x: s as i32 },
                second: d as i32,
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut active: Vec<usize> = (0..threads.len()).collect();
        while !active.is_empty() {
            let k = rng.gen_range(0..active.len());
            let t = active[k];
            threads[t] = step(&mut parent, threads[t]);
            if matches!(threads[t], Hook::Done) {
                active.swap_remove(k);
            }
        }
        compress(&mut parent, &mut rng, false)
    }

    /// `cc_compress`, one thread per spacepoint, interleaved: each walks up to its root and
    /// stores it. With `path_halving` the walk also stores grandparents (`find_root`), as the
    /// kernel once did. Returns the parent array afterwards, which production reads as roots.
    pub fn compress(parent: &mut [i32], rng: &mut ChaCha8Rng, path_halving: bool) -> Vec<i64> {
        #[derive(Clone, Copy)]
        enum Compress {
            Walk(Find),
            Store { root: i32 },
            Done,
        }
        let n = parent.len();
        let mut threads: Vec<Compress> = (0..n as i32)
            .map(|x| Compress::Walk(Find::LoadParent { x }))
            .collect();
        let mut active: Vec<usize> = (0..n).collect();
        while !active.is_empty() {
            let k = rng.gen_range(0..active.len());
            let i = active[k];
            threads[i] = match threads[i] {
                Compress::Walk(find) => {
                    let next = match find {
                        // Without halving the walk goes straight to the parent it loaded.
                        Find::LoadGrand { p, .. } if !path_halving => {
                            Err(Find::LoadParent { x: p })
                        }
                        _ => step_find(parent, find),
                    };
                    match next {
                        Ok(root) => Compress::Store { root },
                        Err(find) => Compress::Walk(find),
                    }
                }
                Compress::Store { root } => {
                    parent[i] = root;
                    Compress::Done
                }
                Compress::Done => Compress::Done,
            };
            if matches!(threads[i], Compress::Done) {
                active.swap_remove(k);
            }
        }
        parent.iter().map(|&p| p as i64).collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::track_building::connected_components as cpu_components;

    /// Labels of the emulated kernels and the production labelling (torch, on the CPU).
    fn gpu_labels(n: usize, src: &[i64], dst: &[i64], min_len: usize, seed: u64) -> Vec<i64> {
        let roots = emulation::component_roots(n, src, dst, seed);
        // The root of every component is its smallest spacepoint.
        for (i, &r) in roots.iter().enumerate() {
            assert!(r <= i as i64 && roots[r as usize] == r);
        }
        let labels = labels_from_roots(&Tensor::from_slice(&roots), min_len).unwrap();
        Vec::<i64>::try_from(&labels).unwrap()
    }

    fn check(n: usize, edges: &[(i64, i64)], min_len: usize, seed: u64) {
        let (src, dst): (Vec<i64>, Vec<i64>) = edges.iter().copied().unzip();
        let cpu = cpu_components(n, &src, &dst, min_len);
        let got = gpu_labels(n, &src, &dst, min_len, seed);
        assert_eq!(got, cpu.labels, "n {n} edges {edges:?} min_len {min_len}");
        let tracks = got.iter().max().map_or(0, |&m| (m + 1).max(0) as usize);
        assert_eq!(tracks, cpu.num_tracks);
    }

    #[test]
    fn hand_built_graphs() {
        let edges = [
            (0, 1),
            (1, 2),
            (4, 5),
            (6, 7),
            (6, 8),
            (8, 9),
            (10, 11),
            (11, 12),
            (12, 10),
        ];
        for seed in 0..20 {
            check(13, &edges, 3, seed);
            check(13, &edges, 1, seed);
        }
        check(5, &[(3, 4), (4, 2), (0, 1), (1, 2)], 3, 1);
        check(6, &[(4, 5), (5, 3), (0, 1), (1, 2)], 3, 1);
        check(3, &[], 3, 0);
        check(1, &[(0, 0)], 1, 0);
    }

    #[test]
    fn random_graphs_under_many_interleavings() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for round in 0..300 {
            let n = rng.gen_range(1..80);
            let e = rng.gen_range(0..2 * n);
            // Chains (long paths to halve) and random edges, in random directions.
            let mut edges: Vec<(i64, i64)> = Vec::new();
            for _ in 0..e {
                let a = rng.gen_range(0..n) as i64;
                let b = if rng.gen_bool(0.5) {
                    (a + 1).min(n as i64 - 1)
                } else {
                    rng.gen_range(0..n) as i64
                };
                edges.push(if rng.gen_bool(0.5) { (a, b) } else { (b, a) });
            }
            check(n, &edges, rng.gen_range(1..5), round);
        }
    }

    /// The race the GPU check found on an H200 (stress graphs, pile-up 300): with path halving
    /// in `cc_compress`, a stale grandparent store can follow a spacepoint's final root store.
    #[test]
    fn compress_leaves_every_spacepoint_on_its_root() {
        let chain: Vec<i32> = (0..40).map(|i: i32| (i - 1).max(0)).collect();
        let mut stale_with_halving = 0;
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let roots = emulation::compress(&mut chain.clone(), &mut rng, false);
            assert!(roots.iter().all(|&r| r == 0), "seed {seed}: {roots:?}");
            let roots = emulation::compress(&mut chain.clone(), &mut rng, true);
            stale_with_halving += usize::from(roots.iter().any(|&r| r != 0));
        }
        assert!(
            stale_with_halving > 0,
            "the emulation no longer shows the race"
        );
    }

    #[test]
    fn labels_from_roots_drop_small_components_and_number_by_index() {
        // Components {0, 2, 5}, {1, 3}, {4}, {6, 7, 8, 9}.
        let roots = Tensor::from_slice(&[0i64, 1, 0, 1, 4, 0, 6, 6, 6, 6]);
        let labels = Vec::<i64>::try_from(&labels_from_roots(&roots, 3).unwrap()).unwrap();
        assert_eq!(labels, [0, -1, 0, -1, -1, 0, 1, 1, 1, 1]);
        let labels = Vec::<i64>::try_from(&labels_from_roots(&roots, 0).unwrap()).unwrap();
        assert_eq!(labels, [0, 1, 0, 1, -1, 0, 2, 2, 2, 2]);
    }
}
