// CUDA kernels of the GPU stages, compiled by NVRTC when a GPU pipeline is loaded.
//
// The prelude that `kernels.rs` puts in front of this file defines the constants shared with
// Rust (EXATRKX_*). Every kernel has a host emulation in Rust that runs the same steps
// (`gpu/frnn.rs`, `gpu/components.rs`, module `emulation` of each) and is tested against the CPU
// stages. The arithmetic of the distance is written with the `__d*_rn` intrinsics so that no
// multiply-add is fused: the squared distance must round exactly as it does on the CPU.

typedef long long i64;

// Grid placement (layout shared with `GridParams` in gpu/frnn.rs).
struct GridParams {
    double lo[3];
    double cell;
    int shape[3];
    int dim;   // embedding dimensions
    int axes;  // grid axes: min(dim, 3)
    int unused;
};
static_assert(sizeof(GridParams) == EXATRKX_GRID_PARAMS_BYTES, "GridParams differs from Rust");

__device__ __forceinline__ int cell_axis(float x, double lo, double cell, int cells) {
    double c = floor(__ddiv_rn(__dsub_rn((double)x, lo), cell));
    c = fmin(fmax(c, 0.0), (double)(cells - 1));
    return (int)c;
}

// Unrolled over the three axes so that the arrays stay in registers; axes beyond `g.axes`
// (embeddings of fewer than three dimensions) are cell 0 and their coordinate is not read.
__device__ __forceinline__ void cell_coords(const GridParams& g, const float* p, int c[3]) {
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        c[k] = k < g.axes ? cell_axis(p[k], g.lo[k], g.cell, g.shape[k]) : 0;
    }
}

__device__ __forceinline__ int linear_cell(const GridParams& g, int c0, int c1, int c2) {
    return (c0 * g.shape[1] + c1) * g.shape[2] + c2;
}

// Pass 1 of the counting sort: the cell of every point and the occupancy of every cell.
extern "C" __global__ void grid_cells(int n, const float* __restrict__ points, GridParams g,
                                      int* __restrict__ cell_of_point,
                                      int* __restrict__ cell_count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int c[3];
    cell_coords(g, points + (i64)i * g.dim, c);
    int cell = linear_cell(g, c[0], c[1], c[2]);
    cell_of_point[i] = cell;
    atomicAdd(&cell_count[cell], 1);
}

// Pass 2: each point takes a slot in its cell (`cursor` starts as the exclusive prefix sum of the
// occupancies). The order within a cell is arbitrary; nothing downstream depends on it.
extern "C" __global__ void grid_fill(int n, const int* __restrict__ cell_of_point,
                                     int* __restrict__ cursor, int* __restrict__ order) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int slot = atomicAdd(&cursor[cell_of_point[i]], 1);
    order[slot] = i;
}

// Squared distance accumulated in f64 over the dimensions in order (the definition of
// docs/DESIGN.md); false when not below r2. Stops after the grid axes when already too far.
__device__ __forceinline__ bool distance2_below(const float* a, const float* b, int dim, int head,
                                                double r2, double* out) {
    double d2 = 0.0;
    for (int k = 0; k < head; ++k) {
        double d = __dsub_rn((double)a[k], (double)b[k]);
        d2 = __dadd_rn(d2, __dmul_rn(d, d));
    }
    if (d2 >= r2) return false;
    for (int k = head; k < dim; ++k) {
        double d = __dsub_rn((double)a[k], (double)b[k]);
        d2 = __dadd_rn(d2, __dmul_rn(d, d));
    }
    *out = d2;
    return d2 < r2;
}

// Calls visit(position, d2) for every other point within the radius of the point at sorted
// position q: the 3x3x3 block of cells around its cell, rows along the last axis as one range.
template <typename Visit>
__device__ __forceinline__ void for_each_within(const GridParams& g,
                                                const float* __restrict__ sorted,
                                                const int* __restrict__ cell_start, int q,
                                                double r2, Visit visit) {
    const float* pq = sorted + (i64)q * g.dim;
    int c[3];
    cell_coords(g, pq, c);
    int lo[3], hi[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        lo[k] = max(c[k] - 1, 0);
        hi[k] = min(c[k] + 1, g.shape[k] - 1);
    }
    for (int c0 = lo[0]; c0 <= hi[0]; ++c0) {
        for (int c1 = lo[1]; c1 <= hi[1]; ++c1) {
            int from = cell_start[linear_cell(g, c0, c1, lo[2])];
            int to = cell_start[linear_cell(g, c0, c1, hi[2]) + 1];
            for (int p = from; p < to; ++p) {
                if (p == q) continue;
                double d2;
                if (distance2_below(pq, sorted + (i64)p * g.dim, g.dim, g.axes, r2, &d2)) {
                    visit(p, d2);
                }
            }
        }
    }
}

// Count pass: |{j : d2(i, j) < r2}| for the point at every sorted position.
extern "C" __global__ void __launch_bounds__(EXATRKX_QUERY_THREADS)
frnn_count(int n, const float* __restrict__ sorted, const int* __restrict__ cell_start,
           GridParams g, double r2, int* __restrict__ count) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= n) return;
    int found = 0;
    for_each_within(g, sorted, cell_start, q, r2, [&](int, double) { ++found; });
    count[q] = found;
}

// Neighbour order of the definition: by squared distance, then by index.
__device__ __forceinline__ bool key_less(double da, i64 ja, double db, i64 jb) {
    return da < db || (da == db && ja < jb);
}

// Max-heap on (d2, j) in the slots of one query: the root is the farthest neighbour kept.
__device__ __forceinline__ void heap_push(double* d2, i64* j, int size, double nd, i64 nj) {
    int k = size;
    while (k > 0) {
        int parent = (k - 1) / 2;
        if (!key_less(d2[parent], j[parent], nd, nj)) break;
        d2[k] = d2[parent];
        j[k] = j[parent];
        k = parent;
    }
    d2[k] = nd;
    j[k] = nj;
}

__device__ __forceinline__ void heap_replace_top(double* d2, i64* j, int size, double nd,
                                                 i64 nj) {
    int k = 0;
    while (true) {
        int child = 2 * k + 1;
        if (child >= size) break;
        if (child + 1 < size && key_less(d2[child], j[child], d2[child + 1], j[child + 1])) {
            ++child;
        }
        if (!key_less(nd, nj, d2[child], j[child])) break;
        d2[k] = d2[child];
        j[k] = j[child];
        k = child;
    }
    d2[k] = nd;
    j[k] = nj;
}

// Fill pass: the neighbour list N(i) of every point (all of them, or its nearest `knn` by
// (d2, index) when it has more), written as oriented edge keys src * n + dst into its slots
// offset[q] .. offset[q] + min(count[q], knn). The union of both directions and the order come
// from sorting the keys and dropping repeats afterwards.
extern "C" __global__ void __launch_bounds__(EXATRKX_QUERY_THREADS)
frnn_fill(int n, const float* __restrict__ sorted, const int* __restrict__ order,
          const int* __restrict__ cell_start, GridParams g, double r2, int knn,
          const int* __restrict__ count, const i64* __restrict__ offset,
          const float* __restrict__ radius_key, double* __restrict__ heap_d2,
          i64* __restrict__ keys) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= n) return;
    i64 base = offset[q];
    i64* slots = keys + base;
    bool cut = count[q] > knn;
    double* slot_d2 = cut ? heap_d2 + base : nullptr;  // `heap_d2` holds one element otherwise
    int size = 0;
    for_each_within(g, sorted, cell_start, q, r2, [&](int p, double d2) {
        i64 j = order[p];
        if (!cut) {
            slots[size++] = j;
        } else if (size < knn) {
            heap_push(slot_d2, slots, size, d2, j);
            ++size;
        } else if (key_less(d2, j, slot_d2[0], slots[0])) {
            heap_replace_top(slot_d2, slots, size, d2, j);
        }
    });
    i64 i = order[q];
    float ri = radius_key[i];
    for (int t = 0; t < size; ++t) {
        i64 j = slots[t];
        float rj = radius_key[j];
        bool i_is_src = ri < rj || (ri == rj && i < j);
        slots[t] = i_is_src ? i * n + j : j * n + i;
    }
}

// Connected components: lock-free union-find. Links always point from a larger index to a
// smaller one, so the root of every component ends as its smallest spacepoint.
__device__ __forceinline__ int find_root(volatile int* parent, int x) {
    while (true) {
        int p = parent[x];
        if (p == x) return x;
        int grand = parent[p];
        if (grand != p) parent[x] = grand;  // path halving; a racing write also holds an ancestor
        x = grand;
    }
}

// One thread per edge: hook the larger root under the smaller one; retry when another thread
// hooked it first.
extern "C" __global__ void cc_hook(i64 num_edges, const i64* __restrict__ src,
                                   const i64* __restrict__ dst, int* parent) {
    i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= num_edges) return;
    volatile int* vp = parent;
    int u = find_root(vp, (int)src[e]);
    int v = find_root(vp, (int)dst[e]);
    while (u != v) {
        int lo = min(u, v);
        int hi = max(u, v);
        int seen = atomicCAS(&parent[hi], hi, lo);
        if (seen == hi) break;
        u = find_root(vp, seen);
        v = find_root(vp, lo);
    }
}

// After every hook: each spacepoint's root. The walk only reads: a path-halving store here
// could land after another thread's final `parent[x] = root` and leave x on a non-root.
extern "C" __global__ void cc_compress(int n, int* parent) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    volatile int* vp = parent;
    int x = i;
    for (int p = vp[x]; p != x; p = vp[x]) x = p;
    parent[i] = x;
}
