//! Track building on the classified graph (the edges above the GNN cut and their scores).
//!
//! - Connected components: every weakly connected component is a track.
//! - Walkthrough ("CC & walk"): components that are simple paths (in- and out-degree at most
//!   1, no cycle) are tracks as they are. On the other components each spacepoint keeps its best
//!   outgoing edge above `walk_min_cut` (ties: the smaller target index) and every outgoing edge
//!   above `walk_high_cut`; edges going backwards in a topological order (only possible in a
//!   graph with cycles) are dropped. In topological order (Kahn's algorithm, smallest index
//!   first), every spacepoint not yet used starts a walk: the longest path from it over unused
//!   spacepoints (ties: the higher edge score, then the smaller index). A path long enough is a
//!   track and its spacepoints become used; otherwise only the start is marked used.
//!
//! With `rescue_cut` the walkthrough runs a second time on the edges between spacepoints the
//! first pass left, following edges above `rescue_cut` (high cut `max(high_cut, rescue_cut)`):
//! particles whose edges all scored low get candidates, which the track-quality network
//! (`track_quality`) then sorts from fakes.
//!
//! With `chain_cut` a last pass takes, among the edges between spacepoints still in no track
//! and above `chain_cut`, those that are both the best outgoing edge of their source and the
//! best incoming edge of their target (ties: the smaller index at the other end). Each
//! spacepoint keeps at most one such edge each way, so they form chains; a chain long enough is
//! a track. The GNN often scores every edge of a particle low in dense regions while still
//! ranking its true edges first at each spacepoint: the chains recover those particles.
//! Tracks of the later passes are flagged `second_pass` for the track-quality network.
//!
//! Tracks with fewer than `min_track_length` (and never fewer than 2) spacepoints are dropped.
//! Tracks are numbered by their smallest spacepoint index, so labels are deterministic.
//! `python/exatrkx/reference.py` implements the same definitions.
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::edges::Buckets;
use crate::error::Result;
use crate::stage::{host_slice, EventData, ExecutionContext, TrackBuilding, TrackLabels};

/// Directed edges with their GNN scores as track building reads them: `src[i] -> dst[i]`
/// scored `scores[i]`, borrowed from wherever they live.
#[derive(Clone, Copy, Debug)]
pub struct ScoredEdges<'a> {
    pub src: &'a [i64],
    pub dst: &'a [i64],
    pub scores: &'a [f32],
}

impl<'a> ScoredEdges<'a> {
    pub fn new(src: &'a [i64], dst: &'a [i64], scores: &'a [f32]) -> Self {
        assert!(src.len() == dst.len() && dst.len() == scores.len());
        Self { src, dst, scores }
    }

    /// A `[2, E]` row-major edge index (`[src..., dst...]`) and its scores.
    pub fn from_index(index: &'a [i64], scores: &'a [f32]) -> Self {
        let (src, dst) = index.split_at(index.len() / 2);
        Self::new(src, dst, scores)
    }

    pub fn len(&self) -> usize {
        self.src.len()
    }

    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    /// `(src, dst, score)` per edge.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64, f32)> + Clone + 'a {
        let (src, dst, scores) = (self.src, self.dst, self.scores);
        src.iter()
            .zip(dst)
            .zip(scores)
            .map(|((&s, &d), &w)| (s, d, w))
    }

    /// The edges at positions `keep`, copied.
    pub fn pick(&self, keep: &[usize]) -> OwnedScoredEdges {
        OwnedScoredEdges {
            src: keep.iter().map(|&i| self.src[i]).collect(),
            dst: keep.iter().map(|&i| self.dst[i]).collect(),
            scores: keep.iter().map(|&i| self.scores[i]).collect(),
        }
    }
}

/// Scored edges that own their columns (a selection of others).
#[derive(Clone, Debug, Default)]
pub struct OwnedScoredEdges {
    pub src: Vec<i64>,
    pub dst: Vec<i64>,
    pub scores: Vec<f32>,
}

impl OwnedScoredEdges {
    pub fn view(&self) -> ScoredEdges<'_> {
        ScoredEdges::new(&self.src, &self.dst, &self.scores)
    }
}

/// Settings of the walkthrough.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WalkthroughConfig {
    /// Lowest score an edge may be followed at.
    pub min_cut: f32,
    /// Score above which every edge is kept for the walk.
    pub high_cut: f32,
    pub min_track_length: usize,
    /// Lowest score of the second pass; `None`: one pass.
    pub rescue_cut: Option<f32>,
    /// Lowest score of the mutual-best chains of the last pass; `None`: no such pass.
    pub chain_cut: Option<f32>,
}

/// Union-find with path halving; the smaller index becomes the root.
struct DisjointSets {
    parent: Vec<u32>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
        }
    }

    fn find(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let grand = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = grand;
            i = grand;
        }
        i
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb) as usize] = ra.min(rb);
        }
    }

    /// Component root of every element.
    fn roots(mut self) -> Vec<u32> {
        (0..self.parent.len() as u32)
            .map(|i| self.find(i))
            .collect()
    }
}

/// Labels from a component id per spacepoint (`u32::MAX` for none) and a predicate on the
/// component's size: tracks numbered by their smallest member.
fn label_components(component: &[u32], keep: impl Fn(u32) -> bool) -> TrackLabels {
    let n = component.len();
    let mut label_of = vec![-1i64; n];
    let mut labels = vec![-1i64; n];
    let mut next = 0i64;
    for i in 0..n {
        let c = component[i];
        if c == u32::MAX || !keep(c) {
            continue;
        }
        if label_of[c as usize] < 0 {
            label_of[c as usize] = next;
            next += 1;
        }
        labels[i] = label_of[c as usize];
    }
    TrackLabels {
        labels,
        num_tracks: next as usize,
        second_pass: vec![false; next as usize],
    }
}

/// The tracks `keep` accepts (by track id), numbered by smallest spacepoint again; second-pass
/// flags go with their tracks.
pub fn relabel(tracks: &TrackLabels, keep: impl Fn(usize) -> bool) -> TrackLabels {
    let track_of: Vec<u32> = tracks
        .labels
        .iter()
        .map(|&l| {
            if l >= 0 && keep(l as usize) {
                l as u32
            } else {
                u32::MAX
            }
        })
        .collect();
    let mut out = label_components(&track_of, |_| true);
    for (&new, &old) in out.labels.iter().zip(&tracks.labels) {
        if new >= 0 {
            out.second_pass[new as usize] = tracks
                .second_pass
                .get(old as usize)
                .copied()
                .unwrap_or(false);
        }
    }
    out
}

/// Weakly connected components with at least `max(min_track_length, 2)` spacepoints.
pub fn connected_components(
    n: usize,
    src: &[i64],
    dst: &[i64],
    min_track_length: usize,
) -> TrackLabels {
    let mut sets = DisjointSets::new(n);
    for (&a, &b) in src.iter().zip(dst) {
        sets.union(a as u32, b as u32);
    }
    let roots = sets.roots();
    let mut size = vec![0u32; n];
    for &r in &roots {
        size[r as usize] += 1;
    }
    let min_len = min_track_length.max(2) as u32;
    label_components(&roots, |r| size[r as usize] >= min_len)
}

/// The walkthrough of the module documentation.
pub fn walkthrough(n: usize, scored: ScoredEdges, cfg: &WalkthroughConfig) -> TrackLabels {
    let min_len = cfg.min_track_length.max(2);
    let edges = || scored.iter().map(|(s, d, w)| (s as u32, d as u32, w));

    // Components that are simple paths.
    let mut sets = DisjointSets::new(n);
    let mut in_deg = vec![0u32; n];
    let mut out_deg = vec![0u32; n];
    for (s, d, _) in edges() {
        sets.union(s, d);
        out_deg[s as usize] += 1;
        in_deg[d as usize] += 1;
    }
    let roots = sets.roots();
    let mut nodes = vec![0u32; n];
    let mut edge_count = vec![0u32; n];
    let mut branching = vec![false; n];
    for i in 0..n {
        let r = roots[i] as usize;
        nodes[r] += 1;
        branching[r] |= in_deg[i] > 1 || out_deg[i] > 1;
    }
    for (s, _, _) in edges() {
        edge_count[roots[s as usize] as usize] += 1;
    }
    let simple = |r: usize| nodes[r] >= 2 && !branching[r] && edge_count[r] + 1 == nodes[r];

    let mut track_of = vec![u32::MAX; n];
    let mut num_tracks = 0u32;
    let mut path_track = vec![u32::MAX; n];
    // Spacepoints left to the walk: those in components with edges that are not simple paths.
    let mut walk_node = vec![false; n];
    for i in 0..n {
        let r = roots[i] as usize;
        if simple(r) {
            if nodes[r] as usize >= min_len {
                if path_track[r] == u32::MAX {
                    path_track[r] = num_tracks;
                    num_tracks += 1;
                }
                track_of[i] = path_track[r];
            }
        } else if nodes[r] >= 2 {
            walk_node[i] = true;
        }
    }

    // The pruned walk graph: best edge above min_cut and every edge above high_cut.
    let all = Buckets::new(
        n,
        edges()
            .filter(|&(s, _, _)| walk_node[s as usize])
            .map(|(s, d, w)| (s, (d, w))),
    );
    let mut kept: Vec<(u32, u32, f32)> = Vec::new();
    for u in (0..n as u32).filter(|&u| walk_node[u as usize]) {
        let mut best: Option<(u32, f32)> = None;
        for &(d, w) in all.of(u as usize) {
            if w > cfg.min_cut && best.is_none_or(|(bd, bw)| w > bw || (w == bw && d < bd)) {
                best = Some((d, w));
            }
        }
        for &(d, w) in all.of(u as usize) {
            if Some((d, w)) == best || w > cfg.high_cut {
                kept.push((u, d, w));
            }
        }
    }

    // Topological order (Kahn, smallest index first); nodes on cycles follow in index order.
    let mut indeg = vec![0u32; n];
    for &(_, d, _) in &kept {
        indeg[d as usize] += 1;
    }
    let walk = Buckets::new(n, kept.iter().map(|&(s, d, w)| (s, (d, w))));
    let mut heap: BinaryHeap<Reverse<u32>> = (0..n as u32)
        .filter(|&u| walk_node[u as usize] && indeg[u as usize] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::new();
    let mut placed = vec![false; n];
    while let Some(Reverse(u)) = heap.pop() {
        order.push(u);
        placed[u as usize] = true;
        for &(d, _) in walk.of(u as usize) {
            indeg[d as usize] -= 1;
            if indeg[d as usize] == 0 {
                heap.push(Reverse(d));
            }
        }
    }
    order.extend((0..n as u32).filter(|&u| walk_node[u as usize] && !placed[u as usize]));
    let mut position = vec![u32::MAX; n];
    for (k, &u) in order.iter().enumerate() {
        position[u as usize] = k as u32;
    }
    let forward = |u: u32, d: u32| position[u as usize] < position[d as usize];

    // Walks: longest path from each unused start over unused spacepoints.
    let mut used = vec![false; n];
    let mut stamp = vec![u32::MAX; n];
    let mut length = vec![0u32; n];
    let mut next = vec![u32::MAX; n];
    let mut reached: Vec<u32> = Vec::new();
    let mut stack: Vec<u32> = Vec::new();
    for (walk_id, &start) in order.iter().enumerate() {
        if used[start as usize] {
            continue;
        }
        let walk_id = walk_id as u32;
        // Spacepoints reachable from the start over unused ones.
        reached.clear();
        stack.push(start);
        stamp[start as usize] = walk_id;
        while let Some(u) = stack.pop() {
            reached.push(u);
            for &(d, _) in walk.of(u as usize) {
                if !used[d as usize] && forward(u, d) && stamp[d as usize] != walk_id {
                    stamp[d as usize] = walk_id;
                    stack.push(d);
                }
            }
        }
        // Longest path lengths, latest in topological order first.
        reached.sort_unstable_by_key(|&u| Reverse(position[u as usize]));
        for &u in &reached {
            let mut best: Option<(u32, f32, u32)> = None;
            for &(d, w) in walk.of(u as usize) {
                if used[d as usize] || !forward(u, d) || stamp[d as usize] != walk_id {
                    continue;
                }
                let l = length[d as usize];
                let better = match best {
                    None => true,
                    Some((bl, bw, bd)) => l > bl || (l == bl && (w > bw || (w == bw && d < bd))),
                };
                if better {
                    best = Some((l, w, d));
                }
            }
            length[u as usize] = 1 + best.map_or(0, |b| b.0);
            next[u as usize] = best.map_or(u32::MAX, |b| b.2);
        }
        if length[start as usize] as usize >= min_len {
            let mut u = start;
            while u != u32::MAX {
                used[u as usize] = true;
                track_of[u as usize] = num_tracks;
                u = next[u as usize];
            }
            num_tracks += 1;
        } else {
            used[start as usize] = true;
        }
    }
    label_components(&track_of, |_| true)
}

/// Chains of mutually best edges above `cut` (module documentation), as tracks of at least
/// `max(min_track_length, 2)` spacepoints.
pub fn mutual_best_chains(
    n: usize,
    edges: ScoredEdges,
    cut: f32,
    min_track_length: usize,
) -> TrackLabels {
    // per spacepoint: (other end, score) of its best edge out and in
    let mut best_out: Vec<Option<(u32, f32)>> = vec![None; n];
    let mut best_in: Vec<Option<(u32, f32)>> = vec![None; n];
    let better = |w: f32, other: u32, best: Option<(u32, f32)>| {
        best.is_none_or(|(bo, bw)| w > bw || (w == bw && other < bo))
    };
    for (s, d, w) in edges.iter() {
        let (s, d) = (s as u32, d as u32);
        if w.is_nan() || w <= cut || s == d {
            continue;
        }
        if better(w, d, best_out[s as usize]) {
            best_out[s as usize] = Some((d, w));
        }
        if better(w, s, best_in[d as usize]) {
            best_in[d as usize] = Some((s, w));
        }
    }
    let (chain_src, chain_dst): (Vec<i64>, Vec<i64>) = (0..n as u32)
        .filter_map(|s| {
            let (d, _) = best_out[s as usize]?;
            best_in[d as usize]
                .is_some_and(|(bs, _)| bs == s)
                .then_some((s as i64, d as i64))
        })
        .unzip();
    // a spacepoint on no chain is a component of one, below any track length
    connected_components(n, &chain_src, &chain_dst, min_track_length)
}

/// The edges whose two ends are in no track of `tracks`.
fn free_edges(tracks: &TrackLabels, edges: ScoredEdges) -> OwnedScoredEdges {
    let unused = |p: i64| tracks.labels[p as usize] < 0;
    let free: Vec<usize> = (0..edges.len())
        .filter(|&i| unused(edges.src[i]) && unused(edges.dst[i]))
        .collect();
    edges.pick(&free)
}

/// The tracks of `earlier` and those of a later pass on the spacepoints it left, numbered by
/// smallest spacepoint; the later pass's tracks are flagged `second_pass`.
fn add_later_pass(earlier: &TrackLabels, later: &TrackLabels) -> TrackLabels {
    let offset = earlier.num_tracks as i64;
    let track_of: Vec<u32> = earlier
        .labels
        .iter()
        .zip(&later.labels)
        .map(|(&a, &b)| match (a, b) {
            (a, _) if a >= 0 => a as u32,
            (_, b) if b >= 0 => (b + offset) as u32,
            _ => u32::MAX,
        })
        .collect();
    let mut tracks = label_components(&track_of, |_| true);
    for ((&label, &a), &b) in tracks.labels.iter().zip(&earlier.labels).zip(&later.labels) {
        if a >= 0 {
            tracks.second_pass[label as usize] = earlier.second_pass[a as usize];
        } else if b >= 0 {
            tracks.second_pass[label as usize] = true;
        }
    }
    tracks
}

/// The walkthrough, its second pass when `cfg.rescue_cut` is set and the mutual-best chains
/// when `cfg.chain_cut` is (module documentation).
pub fn walkthrough_passes(n: usize, edges: ScoredEdges, cfg: &WalkthroughConfig) -> TrackLabels {
    let mut tracks = walkthrough(n, edges, cfg);
    if let Some(rescue_cut) = cfg.rescue_cut {
        let second = walkthrough(
            n,
            free_edges(&tracks, edges).view(),
            &WalkthroughConfig {
                min_cut: rescue_cut,
                high_cut: cfg.high_cut.max(rescue_cut),
                min_track_length: cfg.min_track_length,
                rescue_cut: None,
                chain_cut: None,
            },
        );
        tracks = add_later_pass(&tracks, &second);
    }
    if let Some(chain_cut) = cfg.chain_cut {
        let free = free_edges(&tracks, edges);
        let chains = mutual_best_chains(n, free.view(), chain_cut, cfg.min_track_length);
        tracks = add_later_pass(&tracks, &chains);
    }
    tracks
}

/// Connected components on the CPU (a GPU version goes beside it).
pub struct ConnectedComponents {
    pub min_track_length: usize,
}

impl TrackBuilding for ConnectedComponents {
    fn build_tracks(&self, _ctx: &ExecutionContext, event: &EventData) -> Result<TrackLabels> {
        let index = host_slice::<i64>(&event.edge_index, "tracks")?;
        let (src, dst) = index.split_at(index.len() / 2);
        // Components ignore the scores: every edge here passed the GNN cut.
        Ok(connected_components(
            event.num_spacepoints(),
            src,
            dst,
            self.min_track_length,
        ))
    }
}

/// The walkthrough on the CPU.
pub struct Walkthrough {
    pub cfg: WalkthroughConfig,
}

impl TrackBuilding for Walkthrough {
    fn build_tracks(&self, _ctx: &ExecutionContext, event: &EventData) -> Result<TrackLabels> {
        let (index, scores) = event.host_scored_edges("tracks")?;
        let edges = ScoredEdges::from_index(&index, &scores);
        Ok(walkthrough_passes(
            event.num_spacepoints(),
            edges,
            &self.cfg,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(n: usize, edges: &[(i64, i64)], min_len: usize) -> Vec<i64> {
        let (src, dst): (Vec<i64>, Vec<i64>) = edges.iter().copied().unzip();
        let t = connected_components(n, &src, &dst, min_len);
        assert_eq!(
            t.num_tracks as i64,
            t.labels.iter().max().map_or(0, |m| m + 1)
        );
        t.labels
    }

    fn walk(n: usize, edges: &[(i64, i64, f32)], min_len: usize) -> Vec<i64> {
        let (src, dst, w) = columns(edges);
        let cfg = WalkthroughConfig {
            min_cut: 0.1,
            high_cut: 0.6,
            min_track_length: min_len,
            rescue_cut: None,
            chain_cut: None,
        };
        let t = walkthrough(n, ScoredEdges::new(&src, &dst, &w), &cfg);
        assert_eq!(
            t.num_tracks as i64,
            t.labels.iter().max().map_or(0, |m| m + 1)
        );
        t.labels
    }

    #[test]
    fn components_of_chains_forks_cycles_and_isolated_nodes() {
        // 0-1-2 chain, 3 isolated, 4-5 pair (too short), 6->7, 6->8, 8->9 fork, 10-11-12-10 cycle
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
        assert_eq!(
            cc(13, &edges, 3),
            vec![0, 0, 0, -1, -1, -1, 1, 1, 1, 1, 2, 2, 2]
        );
        // min_track_length 2 keeps the pair; 1 still never makes a lone spacepoint a track.
        assert_eq!(
            cc(13, &edges, 1),
            vec![0, 0, 0, -1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
        );
        // Labels follow the smallest spacepoint of each track, not the edge order.
        assert_eq!(
            cc(5, &[(3, 4), (4, 2), (0, 1), (1, 2)], 3),
            vec![0, 0, 0, 0, 0]
        );
        assert_eq!(
            cc(6, &[(4, 5), (5, 3), (0, 1), (1, 2)], 3),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(cc(0, &[], 3), Vec::<i64>::new());
        assert_eq!(cc(3, &[], 3), vec![-1, -1, -1]);
    }

    #[test]
    fn walkthrough_accepts_simple_paths_as_they_are() {
        // Simple paths are tracks whatever their scores (they passed the GNN cut already).
        let edges = [(0, 1, 0.05), (1, 2, 0.9), (2, 3, 0.3), (5, 6, 0.9)];
        assert_eq!(walk(7, &edges, 3), vec![0, 0, 0, 0, -1, -1, -1]);
        assert_eq!(walk(7, &edges, 2), vec![0, 0, 0, 0, -1, 1, 1]);
    }

    #[test]
    fn walkthrough_splits_a_fork_by_scores() {
        // 0->1->2->3 is the good track; 1->4->5 branches off at a lower score.
        let edges = [
            (0, 1, 0.9),
            (1, 2, 0.8),
            (2, 3, 0.9),
            (1, 4, 0.3),
            (4, 5, 0.9),
        ];
        assert_eq!(walk(6, &edges, 3), vec![0, 0, 0, 0, -1, -1]);
        // A second edge above the high cut lets the walk take the longer branch.
        let edges = [
            (0, 1, 0.9),
            (1, 2, 0.8),
            (1, 4, 0.7),
            (4, 5, 0.9),
            (5, 6, 0.9),
        ];
        assert_eq!(walk(7, &edges, 3), vec![0, 0, -1, -1, 0, 0, 0]);
    }

    #[test]
    fn walkthrough_on_a_merge_and_low_scores() {
        // Two chains merging at 2: 0->2 and 1->2, then 2->3->4. 0 comes first in topological
        // order and takes the merged tail; 1 is left alone.
        let edges = [(0, 2, 0.9), (1, 2, 0.9), (2, 3, 0.9), (3, 4, 0.9)];
        assert_eq!(walk(5, &edges, 3), vec![0, -1, 0, 0, 0]);
        // Edges at or below walk_min_cut are never followed.
        let edges = [(0, 2, 0.9), (1, 2, 0.9), (2, 3, 0.1), (3, 4, 0.9)];
        assert_eq!(walk(5, &edges, 3), vec![-1, -1, -1, -1, -1]);
        assert_eq!(walk(5, &edges, 2), vec![0, -1, 0, 1, 1]);
    }

    #[test]
    fn walkthrough_breaks_cycles_and_ties_deterministically() {
        // A directed cycle is not a simple path; the walk still terminates and uses each
        // spacepoint once: 0->1->2->3 (3->0 goes backwards).
        let edges = [(0, 1, 0.9), (1, 2, 0.9), (2, 3, 0.9), (3, 0, 0.9)];
        assert_eq!(walk(4, &edges, 3), vec![0, 0, 0, 0]);
        // Equal scores and lengths: the smaller target wins.
        let edges = [
            (0, 1, 0.5),
            (0, 2, 0.5),
            (1, 3, 0.5),
            (2, 4, 0.5),
            (5, 6, 0.5),
        ];
        assert_eq!(walk(7, &edges, 3), vec![0, 0, -1, 0, -1, -1, -1]);
    }

    /// `(src, dst, score)` triples as the three columns of `ScoredEdges`.
    fn columns(edges: &[(i64, i64, f32)]) -> (Vec<i64>, Vec<i64>, Vec<f32>) {
        (
            edges.iter().map(|e| e.0).collect(),
            edges.iter().map(|e| e.1).collect(),
            edges.iter().map(|e| e.2).collect(),
        )
    }

    /// The walkthrough alone at `min_cut` (high cut 0.7, at least 3 spacepoints).
    fn one_pass(min_cut: f32) -> WalkthroughConfig {
        WalkthroughConfig {
            min_cut,
            high_cut: 0.7,
            min_track_length: 3,
            rescue_cut: None,
            chain_cut: None,
        }
    }

    #[test]
    fn second_pass_walks_what_the_first_left_and_tracks_keep_their_flags() {
        // 0->1->{2, 3} scores too low for the first pass (min cut 0.4); 4..7 a clear track.
        let edges: Vec<(i64, i64, f32)> = vec![
            (0, 1, 0.2),
            (1, 2, 0.2),
            (1, 3, 0.15),
            (4, 5, 0.9),
            (5, 6, 0.9),
            (6, 7, 0.9),
            (5, 2, 0.05),
        ];
        let (src, dst, w) = columns(&edges);
        let mut cfg = one_pass(0.4);
        let one = walkthrough_passes(8, ScoredEdges::new(&src, &dst, &w), &cfg);
        assert_eq!(one.labels, vec![-1, -1, -1, -1, 0, 0, 0, 0]);
        assert_eq!(one.second_pass, vec![false]);
        cfg.rescue_cut = Some(0.1);
        let two = walkthrough_passes(8, ScoredEdges::new(&src, &dst, &w), &cfg);
        // numbered by smallest spacepoint: the second pass's track comes first
        assert_eq!(two.labels, vec![0, 0, 0, -1, 1, 1, 1, 1]);
        assert_eq!(
            (two.num_tracks, two.second_pass.clone()),
            (2, vec![true, false])
        );
        // dropping a track renumbers the rest and keeps their flags
        let kept = relabel(&two, |t| t == 0);
        assert_eq!(kept.labels, vec![0, 0, 0, -1, -1, -1, -1, -1]);
        assert_eq!(kept.second_pass, vec![true]);
        let kept = relabel(&two, |t| t == 1);
        assert_eq!(kept.labels, vec![-1, -1, -1, -1, 0, 0, 0, 0]);
        assert_eq!(kept.second_pass, vec![false]);
    }

    #[test]
    fn chains_of_mutually_best_edges_take_what_the_walks_left() {
        let edges: Vec<(i64, i64, f32)> = vec![
            // a particle scored low everywhere; 1->4 and 5->2 lose to its edges
            (0, 1, 0.2),
            (1, 2, 0.25),
            (2, 3, 0.2),
            (1, 4, 0.1),
            (5, 2, 0.15),
            // 7's best incoming edge comes from 8, not from 6
            (6, 7, 0.3),
            (8, 7, 0.35),
            (7, 9, 0.3),
            // a clear track for the first pass; 9->10 may not take its spacepoint
            (9, 10, 0.5),
            (10, 11, 0.9),
            (11, 12, 0.9),
        ];
        let (src, dst, w) = columns(&edges);
        let mut cfg = one_pass(0.5);
        let scored = ScoredEdges::new(&src, &dst, &w);
        let walk_only = walkthrough_passes(13, scored, &cfg);
        assert_eq!(walk_only.labels, [vec![-1; 10], vec![0; 3]].concat());
        cfg.chain_cut = Some(0.12);
        let chained = walkthrough_passes(13, scored, &cfg);
        assert_eq!(
            chained.labels,
            vec![0, 0, 0, 0, -1, -1, -1, 1, 1, 1, 2, 2, 2]
        );
        assert_eq!(chained.second_pass, vec![true, true, false]);
        // above 0.22 only 1->2 is left of the first chain: too short
        cfg.chain_cut = Some(0.22);
        let high = walkthrough_passes(13, scored, &cfg);
        assert_eq!(
            high.labels,
            vec![-1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 1, 1, 1]
        );
        assert_eq!(high.second_pass, vec![true, false]);
        // ties at a spacepoint go to the smaller other end: 0->1 and 0->2 score alike
        let t = mutual_best_chains(
            4,
            ScoredEdges::new(&[0, 0, 1, 2], &[1, 2, 3, 3], &[0.3, 0.3, 0.3, 0.3]),
            0.1,
            3,
        );
        assert_eq!(t.labels, vec![0, 0, -1, 0]);
    }

    proptest::proptest! {
        /// Union-find components against petgraph's strongly connected components of the
        /// undirected graph (an independent algorithm: Tarjan's depth-first search).
        #[test]
        fn components_equal_petgraph(
            n in 1usize..60,
            raw in proptest::collection::vec((0u32..60, 0u32..60), 0..120),
            min_len in 0usize..6,
        ) {
            let edges: Vec<(i64, i64)> = raw
                .iter()
                .map(|&(a, b)| ((a as usize % n) as i64, (b as usize % n) as i64))
                .collect();
            let src: Vec<i64> = edges.iter().map(|e| e.0).collect();
            let dst: Vec<i64> = edges.iter().map(|e| e.1).collect();
            let ours = connected_components(n, &src, &dst, min_len);

            let mut graph = petgraph::graph::UnGraph::<(), ()>::new_undirected();
            let nodes: Vec<_> = (0..n).map(|_| graph.add_node(())).collect();
            for &(a, b) in &edges {
                graph.add_edge(nodes[a as usize], nodes[b as usize], ());
            }
            let mut components: Vec<Vec<usize>> = petgraph::algo::tarjan_scc(&graph)
                .into_iter()
                .map(|c| {
                    let mut c: Vec<usize> = c.into_iter().map(|v| v.index()).collect();
                    c.sort_unstable();
                    c
                })
                .filter(|c| c.len() >= min_len.max(2))
                .collect();
            components.sort_unstable_by_key(|c| c[0]);
            let mut expected = vec![-1i64; n];
            for (label, c) in components.iter().enumerate() {
                for &v in c {
                    expected[v] = label as i64;
                }
            }
            proptest::prop_assert_eq!(ours.num_tracks, components.len());
            proptest::prop_assert_eq!(ours.labels, expected);
        }
    }
}
