//! The edge convention of docs/DESIGN.md, shared by every graph construction: each unordered
//! pair once, no self-loops, `src` the spacepoint of smaller radius (smaller index on a tie),
//! edges sorted by `(src, dst)`.
use rayon::prelude::*;

/// Does the edge between `a` and `b` start at `a`?
#[inline]
pub fn starts_at(radius: &[f32], a: u32, b: u32) -> bool {
    let (ra, rb) = (radius[a as usize], radius[b as usize]);
    ra < rb || (ra == rb && a < b)
}

/// Values grouped by bucket, in the order they came (a stable counting sort): bucket `b`
/// holds `values[offsets[b]..offsets[b + 1]]`. The CSR lists of the graph stages.
pub(crate) struct Buckets<T> {
    pub offsets: Vec<u32>,
    pub values: Vec<T>,
}

impl<T: Copy + Default> Buckets<T> {
    /// `n` buckets from `(bucket, value)` items; `items` is walked twice (count, then fill).
    pub fn new(n: usize, items: impl Iterator<Item = (u32, T)> + Clone) -> Self {
        let mut offsets = vec![0u32; n + 1];
        for (b, _) in items.clone() {
            offsets[b as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut values = vec![T::default(); offsets[n] as usize];
        for (b, v) in items {
            let slot = &mut fill[b as usize];
            values[*slot as usize] = v;
            *slot += 1;
        }
        Self { offsets, values }
    }

    /// The values of bucket `b`.
    #[inline]
    pub fn of(&self, b: usize) -> &[T] {
        &self.values[self.offsets[b] as usize..self.offsets[b + 1] as usize]
    }
}

/// Orient spacepoint pairs (either order, repeats allowed) by `radius` and sort them by
/// `(src, dst)`, dropping self-loops and repeated pairs. Returns `[src..., dst...]` (`[2, E]`).
/// A counting sort over `src`, then a sort within each source: linear in the edge count.
pub fn orient_and_sort(radius: &[f32], pairs: &[[u32; 2]]) -> Vec<i64> {
    let n = radius.len();
    let oriented = pairs.iter().filter(|[a, b]| a != b).map(|&[a, b]| {
        if starts_at(radius, a, b) {
            (a, b)
        } else {
            (b, a)
        }
    });
    let Buckets {
        offsets,
        values: mut targets,
    } = Buckets::new(n, oriented);
    // Sort the targets of each source; sources are handed out in blocks of similar size.
    let mut segments: Vec<&mut [u32]> = Vec::with_capacity(n);
    let mut rest = targets.as_mut_slice();
    for i in 0..n {
        let (head, tail) = rest.split_at_mut((offsets[i + 1] - offsets[i]) as usize);
        segments.push(head);
        rest = tail;
    }
    segments
        .par_iter_mut()
        .with_min_len(256)
        .for_each(|s| s.sort_unstable());
    drop(segments);

    let mut src = Vec::with_capacity(targets.len());
    let mut dst = Vec::with_capacity(targets.len());
    for i in 0..n {
        let seg = &targets[offsets[i] as usize..offsets[i + 1] as usize];
        for (k, &d) in seg.iter().enumerate() {
            if k == 0 || seg[k - 1] != d {
                src.push(i as i64);
                dst.push(d as i64);
            }
        }
    }
    src.extend_from_slice(&dst);
    src
}

/// `(src, dst)` pairs of a `[2, E]` row-major edge list.
pub fn edge_pairs(index: &[i64]) -> impl Iterator<Item = (i64, i64)> + '_ {
    let (src, dst) = index.split_at(index.len() / 2);
    src.iter().copied().zip(dst.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orients_by_radius_then_index_and_sorts() {
        let radius = [0.5, 0.2, 0.2, 0.9];
        let pairs = [[0, 1], [3, 0], [2, 1], [1, 2], [0, 0], [3, 2], [0, 1]];
        let index = orient_and_sort(&radius, &pairs);
        let edges: Vec<_> = edge_pairs(&index).collect();
        // 1 and 2 share a radius: the smaller index is the source.
        assert_eq!(edges, vec![(0, 3), (1, 0), (1, 2), (2, 3)]);
    }

    #[test]
    fn empty_inputs() {
        assert!(orient_and_sort(&[], &[]).is_empty());
        assert!(orient_and_sort(&[0.1, 0.2], &[[1, 1]]).is_empty());
    }
}
