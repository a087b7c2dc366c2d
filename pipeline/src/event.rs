//! What goes into the pipeline for one event and what comes out of it.

/// One event as the caller holds it: row-major features `[n, num_features]`.
#[derive(Clone, Copy, Debug)]
pub struct EventInput<'a> {
    pub features: &'a [f32],
    pub num_features: usize,
    /// Global module id per spacepoint (module-map graph construction only).
    pub module_ids: Option<&'a [i64]>,
}

impl EventInput<'_> {
    pub fn num_spacepoints(&self) -> usize {
        self.features
            .len()
            .checked_div(self.num_features)
            .unwrap_or(0)
    }

    /// Feature column `column` of every spacepoint.
    pub fn column(&self, column: usize) -> Vec<f32> {
        self.features
            .chunks_exact(self.num_features)
            .map(|row| row[column])
            .collect()
    }
}

/// Which optional outputs to produce besides the labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputRequest {
    pub edges: bool,
    pub tracks: bool,
}

/// Fitted helix parameters of one track (see `fit`); NaN where a track has too few spacepoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackParams {
    pub label: i64,
    pub n_spacepoints: usize,
    /// Transverse momentum in GeV (+inf for a straight track).
    pub pt: f32,
    pub eta: f32,
    /// Azimuth of the momentum at the point of closest approach to the beam line.
    pub phi: f32,
    /// Signed transverse impact parameter in mm (ATLAS sign convention).
    pub d0: f32,
    /// z at the point of closest approach, in mm.
    pub z0: f32,
    pub chi2_ndf: f32,
}

impl TrackParams {
    /// The row of the `TRACKS` output: `label, n_spacepoints, pt, eta, phi, d0, z0, chi2_ndf`.
    pub fn to_row(&self) -> [f32; 8] {
        [
            self.label as f32,
            self.n_spacepoints as f32,
            self.pt,
            self.eta,
            self.phi,
            self.d0,
            self.z0,
            self.chi2_ndf,
        ]
    }
}

/// Wall time of one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageTiming {
    pub stage: &'static str,
    pub seconds: f64,
}

/// The pipeline's answer for one event.
#[derive(Clone, Debug, Default)]
pub struct EventOutput {
    /// One label per spacepoint, `0..num_tracks`, -1 for spacepoints in no track.
    pub labels: Vec<i64>,
    pub num_tracks: usize,
    /// Edges entering track building, `[2, E]` row-major (all sources, then all targets).
    pub edge_index: Option<Vec<i64>>,
    /// GNN scores (sigmoid) of those edges.
    pub edge_scores: Option<Vec<f32>>,
    pub tracks: Option<Vec<TrackParams>>,
    /// Stages in the order they ran: `embedding` (radius graph only), `graph`, `filter`, `gnn`,
    /// `tracks`, `track_quality` (with a `track_model`), and `fit` when tracks were requested.
    pub timings: Vec<StageTiming>,
    /// Edges after graph construction, after the filter and after the GNN cut.
    pub graph_sizes: [usize; 3],
}

impl EventOutput {
    /// Seconds spent in `stage`, 0 when it did not run.
    pub fn seconds(&self, stage: &str) -> f64 {
        self.timings
            .iter()
            .filter(|t| t.stage == stage)
            .map(|t| t.seconds)
            .sum()
    }

    pub fn total_seconds(&self) -> f64 {
        self.timings.iter().map(|t| t.seconds).sum()
    }
}
