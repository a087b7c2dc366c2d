//! Eight-lane f32 vectors for the fused CPU kernels (`fused_filter`, `fused_gnn`), and the
//! layer pieces they share: a dense layer accumulated over a tile of rows whose outputs stay in
//! registers, LayerNorm with ReLU. Two implementations: AVX2 with FMA, picked at run time,
//! and plain Rust for other CPUs (and to test the first against).

pub(crate) const LANES: usize = 8;
pub(crate) const LAYER_NORM_EPS: f32 = 1e-5;

/// One eight-lane f32 vector. Implementations are only used inside functions compiled for
/// their features (`Avx2` inside `#[target_feature(enable = "avx2,fma")]` functions).
pub(crate) trait Lanes: Copy {
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// Lanes `8 v .. 8 v + 8` of `row`.
    fn load(row: &[f32], v: usize) -> Self;
    fn store(self, row: &mut [f32], v: usize);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// self * b + c
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn relu(self) -> Self;
    fn sum(self) -> f32;
}

/// The plain-Rust vector.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; LANES]);

impl Lanes for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Self([0.0; LANES])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Self([v; LANES])
    }
    #[inline(always)]
    fn load(row: &[f32], v: usize) -> Self {
        Self(std::array::from_fn(|l| row[LANES * v + l]))
    }
    #[inline(always)]
    fn store(self, row: &mut [f32], v: usize) {
        row[LANES * v..LANES * (v + 1)].copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] + o.0[l]))
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] - o.0[l]))
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] * o.0[l]))
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
    #[inline(always)]
    fn relu(self) -> Self {
        Self(self.0.map(|v| v.max(0.0)))
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        let s = self.0;
        ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Lanes, LANES};

    /// An AVX register. Its methods are only called from functions compiled with
    /// `#[target_feature(enable = "avx2,fma")]` on CPUs that have both (`have_avx2`).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    // SAFETY (every method): the callers run on CPUs with AVX2 and FMA (see the type), and
    // `load` / `store` check their bounds.
    impl Lanes for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            Self(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            Self(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        fn load(row: &[f32], v: usize) -> Self {
            let lanes = &row[LANES * v..LANES * (v + 1)];
            Self(unsafe { _mm256_loadu_ps(lanes.as_ptr()) })
        }
        #[inline(always)]
        fn store(self, row: &mut [f32], v: usize) {
            let lanes = &mut row[LANES * v..LANES * (v + 1)];
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            Self(unsafe { _mm256_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            Self(unsafe { _mm256_sub_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            Self(unsafe { _mm256_mul_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Self(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn relu(self) -> Self {
            Self(unsafe { _mm256_max_ps(self.0, _mm256_setzero_ps()) })
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe {
                let s = _mm_add_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps(self.0, 1),
                );
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
                _mm_cvtss_f32(s)
            }
        }
    }
}

/// A piece of work written once over `Lanes` (one rayon task's share of a stage).
pub(crate) trait Kernel {
    fn run<L: Lanes>(self);
}

/// Run `kernel` with AVX2 vectors when `avx2` (the caller checked `have_avx2`), else with
/// the portable ones.
pub(crate) fn dispatch<K: Kernel>(kernel: K, avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        assert!(have_avx2(), "AVX2 kernels on a CPU without AVX2 and FMA");
        // SAFETY: the CPU has AVX2 and FMA (just checked).
        unsafe { run_avx2(kernel) };
        return;
    }
    let _ = avx2;
    kernel.run::<Portable>();
}

/// `kernel.run` compiled with AVX2 and FMA (its `#[inline(always)]` body and the `Avx2`
/// methods inline here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) {
    kernel.run::<Avx2>()
}

/// Ask for `row` in the cache ahead of its use (the random gathers of node rows per edge).
#[inline(always)]
pub(crate) fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a hint on a valid address; SSE is part of every x86_64 CPU.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Whether the CPU runs the AVX2 kernels.
pub(crate) fn have_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A Linear layer to `H` outputs, its weights by input (`weight[k]` the outputs' weights of
/// input k), as the kernels read them.
pub(crate) struct Dense<const H: usize> {
    pub weight: Vec<[f32; H]>,
    pub bias: [f32; H],
}

/// A LayerNorm's scale and shift.
pub(crate) struct Norm<const H: usize> {
    pub gamma: [f32; H],
    pub beta: [f32; H],
}

/// `H` outputs of one row in `V` vectors.
pub(crate) type Acc<L, const V: usize> = [L; V];

// No closures over `Lanes` methods below: a closure is not compiled with its caller's target
// features, so the AVX intrinsics in it would become calls.

#[inline(always)]
pub(crate) fn load_row<L: Lanes, const V: usize>(row: &[f32]) -> Acc<L, V> {
    let mut acc = [L::zero(); V];
    for v in 0..V {
        acc[v] = L::load(row, v);
    }
    acc
}

#[inline(always)]
pub(crate) fn add_row<L: Lanes, const V: usize>(acc: &mut Acc<L, V>, row: &[f32]) {
    for v in 0..V {
        acc[v] = acc[v].add(L::load(row, v));
    }
}

#[inline(always)]
pub(crate) fn store_row<L: Lanes, const V: usize>(acc: &Acc<L, V>, row: &mut [f32]) {
    for v in 0..V {
        acc[v].store(row, v);
    }
}

/// `acc[t] += sum_k x[t][k] * weight[k]` for the `T` rows of a tile (`x[t]` of any width up to
/// `weight.len()`). The T x V accumulators, a weight vector and T broadcasts should fit the 16
/// AVX registers: T = 2 for H = 48, 3 for H = 32.
#[inline(always)]
pub(crate) fn accumulate<L: Lanes, const H: usize, const V: usize, const T: usize>(
    acc: &mut [Acc<L, V>; T],
    weight: &[[f32; H]],
    x: [&[f32]; T],
) {
    for (k, w) in weight.iter().enumerate() {
        let mut xk = [L::zero(); T];
        for t in 0..T {
            xk[t] = L::splat(x[t][k]);
        }
        for v in 0..V {
            let wv = L::load(w, v);
            for t in 0..T {
                acc[t][v] = xk[t].mul_add(wv, acc[t][v]);
            }
        }
    }
}

/// `dense` of a tile of rows from its bias: accumulators in registers.
#[inline(always)]
pub(crate) fn dense<L: Lanes, const H: usize, const V: usize, const T: usize>(
    dense: &Dense<H>,
    x: [&[f32]; T],
) -> [Acc<L, V>; T] {
    let mut acc = [load_row::<L, V>(&dense.bias); T];
    accumulate(&mut acc, &dense.weight, x);
    acc
}

/// LayerNorm (biased variance, as torch) then ReLU of one row's accumulators.
#[inline(always)]
pub(crate) fn norm_relu<L: Lanes, const H: usize, const V: usize>(
    acc: &Acc<L, V>,
    norm: &Norm<H>,
) -> Acc<L, V> {
    let width = (LANES * V) as f32;
    let mut sum = acc[0];
    for v in 1..V {
        sum = sum.add(acc[v]);
    }
    let mean = L::splat(sum.sum() / width);
    let mut centred = [L::zero(); V];
    let mut squares = L::zero();
    for v in 0..V {
        centred[v] = acc[v].sub(mean);
        squares = centred[v].mul_add(centred[v], squares);
    }
    let inv = L::splat(1.0 / (squares.sum() / width + LAYER_NORM_EPS).sqrt());
    let mut out = [L::zero(); V];
    for v in 0..V {
        let scaled = centred[v].mul(inv).mul(L::load(&norm.gamma, v));
        out[v] = scaled.add(L::load(&norm.beta, v)).relu();
    }
    out
}

/// Dot product of one row's accumulators with `weight`.
#[inline(always)]
pub(crate) fn dot<L: Lanes, const V: usize>(acc: &Acc<L, V>, weight: &[f32]) -> f32 {
    let mut sum = L::zero();
    for v in 0..V {
        sum = acc[v].mul_add(L::load(weight, v), sum);
    }
    sum.sum()
}

/// Parameters of a TorchScript network by name, as flat f32 with their shapes.
pub(crate) struct Parameters(pub Vec<(String, Vec<f32>, Vec<i64>)>);

impl Parameters {
    pub fn get(&self, name: &str, shape: &[i64]) -> Option<&[f32]> {
        self.0
            .iter()
            .find(|(n, _, s)| n == name && s == shape)
            .map(|(_, v, _)| v.as_slice())
    }

    /// The Linear `name` with `inputs` inputs and `H` outputs (`bias`: whether it has one).
    pub fn dense<const H: usize>(&self, name: &str, inputs: usize, bias: bool) -> Option<Dense<H>> {
        let w = self.get(&format!("{name}.weight"), &[H as i64, inputs as i64])?;
        let bias = if bias {
            row(self.get(&format!("{name}.bias"), &[H as i64])?)
        } else {
            [0.0; H]
        };
        Some(Dense {
            weight: (0..inputs)
                .map(|k| std::array::from_fn(|j| w[j * inputs + k]))
                .collect(),
            bias,
        })
    }

    pub fn norm<const H: usize>(&self, name: &str) -> Option<Norm<H>> {
        Some(Norm {
            gamma: row(self.get(&format!("{name}.weight"), &[H as i64])?),
            beta: row(self.get(&format!("{name}.bias"), &[H as i64])?),
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn row<const H: usize>(v: &[f32]) -> [f32; H] {
    std::array::from_fn(|j| v[j])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> (Dense<16>, Norm<16>) {
        let f = |i: usize| ((i * 37 % 23) as f32 - 11.0) / 7.0;
        let dense = Dense {
            weight: (0..5)
                .map(|k| std::array::from_fn(|j| f(k * 16 + j)))
                .collect(),
            bias: std::array::from_fn(|j| f(j + 3)),
        };
        let norm = Norm {
            gamma: std::array::from_fn(|j| 1.0 + f(j) / 10.0),
            beta: std::array::from_fn(|j| f(j + 7) / 10.0),
        };
        (dense, norm)
    }

    /// Linear, LayerNorm and ReLU of one row in plain f64.
    fn reference(dense: &Dense<16>, norm: &Norm<16>, x: &[f32]) -> Vec<f64> {
        let y: Vec<f64> = (0..16)
            .map(|j| {
                dense.bias[j] as f64
                    + (0..x.len())
                        .map(|k| x[k] as f64 * dense.weight[k][j] as f64)
                        .sum::<f64>()
            })
            .collect();
        let mean = y.iter().sum::<f64>() / 16.0;
        let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 16.0;
        (0..16)
            .map(|j| {
                let n = (y[j] - mean) / (var + LAYER_NORM_EPS as f64).sqrt();
                (n * norm.gamma[j] as f64 + norm.beta[j] as f64).max(0.0)
            })
            .collect()
    }

    fn layer_with<L: Lanes>(
        dense_layer: &Dense<16>,
        norm: &Norm<16>,
        x: [&[f32]; 2],
    ) -> Vec<Vec<f32>> {
        let acc = dense::<L, 16, 2, 2>(dense_layer, x);
        acc.iter()
            .map(|a| {
                let mut out = vec![0f32; 16];
                store_row(&norm_relu(a, norm), &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn a_layer_matches_f64_on_every_vector_kind() {
        let (dense, norm) = layer();
        let rows = [[0.5f32, -1.0, 2.0, 0.25, 3.0], [-0.1, 0.2, -0.3, 0.4, -0.5]];
        let x = [&rows[0][..], &rows[1][..]];
        let mut kinds = vec![layer_with::<Portable>(&dense, &norm, x)];
        if have_avx2() {
            #[cfg(target_arch = "x86_64")]
            kinds.push(unsafe { avx2_layer(&dense, &norm, x) });
        }
        for got in kinds {
            for (t, row) in rows.iter().enumerate() {
                let want = reference(&dense, &norm, row);
                for j in 0..16 {
                    assert!((got[t][j] as f64 - want[j]).abs() < 1e-5, "{t} {j}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_layer(dense: &Dense<16>, norm: &Norm<16>, x: [&[f32]; 2]) -> Vec<Vec<f32>> {
        layer_with::<Avx2>(dense, norm, x)
    }

    #[test]
    fn dot_and_parameters() {
        let acc = load_row::<Portable, 2>(&(0..16).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(dot(&acc, &[1.0; 16]), 120.0);
        let params = Parameters(vec![
            (
                "l.weight".into(),
                vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                vec![3, 2],
            ),
            ("l.bias".into(), vec![0.5, 0.25, 0.125], vec![3]),
        ]);
        let d = params.dense::<3>("l", 2, true).unwrap();
        assert_eq!(d.weight, vec![[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]);
        assert_eq!(d.bias, [0.5, 0.25, 0.125]);
        assert!(
            params.dense::<3>("l", 3, true).is_none(),
            "a wrong shape is not taken"
        );
        assert!(params.norm::<3>("l").is_none());
    }
}
