//! A first, straightforward pipeline: networks through tch, an all-pairs radius graph and
//! union-find components. It fixes the public API; the stage modules replace its internals.
use std::time::Instant;

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::config::{DeviceKind, GraphMethod, PipelineConfig};
use crate::error::{PipelineError, Result};

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
}

/// Which optional outputs to produce besides the labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputRequest {
    pub edges: bool,
    pub tracks: bool,
}

/// Fitted helix parameters of one track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackParams {
    pub label: i64,
    pub n_spacepoints: usize,
    pub pt: f32,
    pub eta: f32,
    pub phi: f32,
    pub d0: f32,
    pub z0: f32,
    pub chi2_ndf: f32,
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
    pub timings: Vec<StageTiming>,
    /// Edges after graph construction, after the filter and after the GNN cut.
    pub graph_sizes: [usize; 3],
}

/// The loaded models and settings of one pipeline (one per Triton model instance).
pub struct Pipeline {
    cfg: PipelineConfig,
    device: Device,
    embedding: CModule,
    filter: CModule,
    gnn: CModule,
    num_features: usize,
}

fn load(path: std::path::PathBuf, device: Device) -> Result<CModule> {
    if !path.is_file() {
        return Err(PipelineError::ModelLoad {
            path: path.display().to_string(),
            reason: "no such file".into(),
        });
    }
    let mut module =
        CModule::load_on_device(&path, device).map_err(|e| PipelineError::ModelLoad {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    module.set_eval();
    Ok(module)
}

fn int_method(module: &CModule, name: &str, path: &std::path::Path) -> Result<usize> {
    match module.method_is::<IValue>(name, &[]) {
        Ok(IValue::Int(n)) if n > 0 => Ok(n as usize),
        other => Err(PipelineError::ModelLoad {
            path: path.display().to_string(),
            reason: format!("method {name}() must return a positive int, got {other:?}"),
        }),
    }
}

fn torch(stage: &'static str) -> impl Fn(tch::TchError) -> PipelineError {
    move |source| PipelineError::Torch { stage, source }
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig) -> Result<Self> {
        cfg.validate()?;
        let device = match cfg.device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda(i) => {
                if !tch::Cuda::is_available() {
                    return Err(PipelineError::Device(format!(
                        "CUDA device {i} requested but no GPU is available"
                    )));
                }
                Device::Cuda(i)
            }
        };
        let embedding = load(cfg.embedding_path(), device)?;
        let filter = load(cfg.filter_path(), device)?;
        let gnn = load(cfg.gnn_path(), device)?;
        let num_features = int_method(&embedding, "num_features", &cfg.embedding_path())?;
        for (module, path) in [(&filter, cfg.filter_path()), (&gnn, cfg.gnn_path())] {
            let n = int_method(module, "num_features", &path)?;
            if n != num_features {
                return Err(PipelineError::ModelLoad {
                    path: path.display().to_string(),
                    reason: format!(
                        "expects {n} features but the embedding expects {num_features}"
                    ),
                });
            }
        }
        if cfg.graph_construction == GraphMethod::ModuleMap {
            return Err(PipelineError::Config(
                "module_map graph construction is not available yet".into(),
            ));
        }
        Ok(Self {
            cfg,
            device,
            embedding,
            filter,
            gnn,
            num_features,
        })
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Feature columns the loaded models expect.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    pub fn check_input(&self, input: &EventInput) -> Result<()> {
        if input.num_features != self.num_features {
            return Err(PipelineError::Input(format!(
                "FEATURES has {} columns but the models expect {}",
                input.num_features, self.num_features
            )));
        }
        if !input.features.len().is_multiple_of(self.num_features) {
            return Err(PipelineError::Input(format!(
                "FEATURES holds {} values, not a multiple of {}",
                input.features.len(),
                self.num_features
            )));
        }
        let n = input.num_spacepoints();
        if n > self.cfg.max_spacepoints {
            return Err(PipelineError::Input(format!(
                "event has {n} spacepoints, above max_spacepoints = {}",
                self.cfg.max_spacepoints
            )));
        }
        if let Some(i) = input.features.iter().position(|v| !v.is_finite()) {
            return Err(PipelineError::Input(format!(
                "FEATURES[{}, {}] is not finite ({})",
                i / self.num_features,
                i % self.num_features,
                input.features[i]
            )));
        }
        if let Some(ids) = input.module_ids {
            if ids.len() != n {
                return Err(PipelineError::Input(format!(
                    "MODULE_ID has {} entries for {n} spacepoints",
                    ids.len()
                )));
            }
        }
        Ok(())
    }

    /// Run every stage on one event.
    pub fn run(&self, input: &EventInput, want: OutputRequest) -> Result<EventOutput> {
        self.check_input(input)?;
        let n = input.num_spacepoints();
        let mut out = EventOutput {
            labels: vec![-1; n],
            ..Default::default()
        };
        if n == 0 {
            if want.edges {
                out.edge_index = Some(Vec::new());
                out.edge_scores = Some(Vec::new());
            }
            if want.tracks {
                out.tracks = Some(Vec::new());
            }
            return Ok(out);
        }
        let _guard = tch::no_grad_guard();
        let x = Tensor::from_slice(input.features)
            .view([n as i64, self.num_features as i64])
            .to_device(self.device);

        let t = Instant::now();
        let emb: Vec<f32> = {
            let e = self
                .embedding
                .forward_ts(&[&x])
                .map_err(torch("embedding"))?;
            let e = e.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
            Vec::<f32>::try_from(e.view([-1])).map_err(torch("embedding"))?
        };
        let dim = emb.len() / n;
        out.timings.push(StageTiming {
            stage: "embedding",
            seconds: t.elapsed().as_secs_f64(),
        });

        let t = Instant::now();
        let (mut src, mut dst) = radius_graph_all_pairs(&emb, dim, self.cfg.radius, self.cfg.knn);
        orient_and_sort(input.features, self.num_features, &mut src, &mut dst);
        out.graph_sizes[0] = src.len();
        out.timings.push(StageTiming {
            stage: "graph",
            seconds: t.elapsed().as_secs_f64(),
        });

        let t = Instant::now();
        let (src, dst, _) =
            self.classify(&self.filter, "filter", &x, &src, &dst, self.cfg.filter_cut)?;
        out.graph_sizes[1] = src.len();
        out.timings.push(StageTiming {
            stage: "filter",
            seconds: t.elapsed().as_secs_f64(),
        });

        let t = Instant::now();
        let (src, dst, scores) =
            self.classify(&self.gnn, "gnn", &x, &src, &dst, self.cfg.gnn_cut)?;
        out.graph_sizes[2] = src.len();
        out.timings.push(StageTiming {
            stage: "gnn",
            seconds: t.elapsed().as_secs_f64(),
        });

        let t = Instant::now();
        out.num_tracks = components(n, &src, &dst, self.cfg.min_track_length, &mut out.labels);
        out.timings.push(StageTiming {
            stage: "tracks",
            seconds: t.elapsed().as_secs_f64(),
        });
        if want.edges {
            out.edge_index = Some(src.iter().chain(dst.iter()).copied().collect());
            out.edge_scores = Some(scores);
        }
        if want.tracks {
            out.tracks = Some(Vec::new());
        }
        Ok(out)
    }

    /// Score edges with one network in chunks and keep those above `cut`.
    fn classify(
        &self,
        module: &CModule,
        stage: &'static str,
        x: &Tensor,
        src: &[i64],
        dst: &[i64],
        cut: f32,
    ) -> Result<(Vec<i64>, Vec<i64>, Vec<f32>)> {
        let e = src.len();
        let mut scores = Vec::with_capacity(e);
        if e > 0 {
            let edges = Tensor::from_slice2(&[src, dst]).to_device(self.device);
            let chunk = if stage == "filter" {
                self.cfg.filter_chunk
            } else {
                e
            };
            let mut start = 0;
            while start < e {
                let len = chunk.min(e - start);
                let part = edges.narrow(1, start as i64, len as i64);
                let logits = module.forward_ts(&[x, &part]).map_err(torch(stage))?;
                let s = logits
                    .to_kind(Kind::Float)
                    .sigmoid()
                    .to_device(Device::Cpu)
                    .contiguous();
                scores.extend(Vec::<f32>::try_from(s.view([-1])).map_err(torch(stage))?);
                start += len;
            }
        }
        let keep: Vec<usize> = (0..e).filter(|&i| scores[i] > cut).collect();
        Ok((
            keep.iter().map(|&i| src[i]).collect(),
            keep.iter().map(|&i| dst[i]).collect(),
            keep.iter().map(|&i| scores[i]).collect(),
        ))
    }
}

/// The brute-force definition of the radius graph (docs/DESIGN.md), O(n^2).
fn radius_graph_all_pairs(
    emb: &[f32],
    dim: usize,
    radius: f32,
    knn: usize,
) -> (Vec<i64>, Vec<i64>) {
    let n = emb.len() / dim.max(1);
    let r2 = (radius as f64) * (radius as f64);
    let mut pairs = std::collections::BTreeSet::new();
    let mut near: Vec<(f64, usize)> = Vec::new();
    for i in 0..n {
        near.clear();
        for j in 0..n {
            if j == i {
                continue;
            }
            let mut d2 = 0.0f64;
            for k in 0..dim {
                let d = emb[i * dim + k] as f64 - emb[j * dim + k] as f64;
                d2 += d * d;
            }
            if d2 < r2 {
                near.push((d2, j));
            }
        }
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, j) in near.iter().take(knn) {
            pairs.insert((i.min(j), i.max(j)));
        }
    }
    pairs.into_iter().map(|(a, b)| (a as i64, b as i64)).unzip()
}

/// Orient each edge from the smaller to the larger radius (feature 0), then sort by (src, dst).
fn orient_and_sort(features: &[f32], nf: usize, src: &mut Vec<i64>, dst: &mut Vec<i64>) {
    let r = |i: i64| features[i as usize * nf];
    let mut edges: Vec<(i64, i64)> = src
        .iter()
        .zip(dst.iter())
        .map(|(&a, &b)| {
            let a_first = r(a) < r(b) || (r(a) == r(b) && a < b);
            if a_first {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect();
    edges.sort_unstable();
    (*src, *dst) = edges.into_iter().unzip();
}

/// Weakly connected components by union-find; components below `min_len` get -1.
fn components(n: usize, src: &[i64], dst: &[i64], min_len: usize, labels: &mut [i64]) -> usize {
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (&a, &b) in src.iter().zip(dst) {
        let (ra, rb) = (find(&mut parent, a as usize), find(&mut parent, b as usize));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut size = vec![0usize; n];
    for i in 0..n {
        let root = find(&mut parent, i);
        size[root] += 1;
    }
    let mut label_of_root = vec![-1i64; n];
    let mut next = 0i64;
    for (i, label) in labels.iter_mut().enumerate().take(n) {
        let root = find(&mut parent, i);
        if size[root] >= min_len.max(2) {
            if label_of_root[root] < 0 {
                label_of_root[root] = next;
                next += 1;
            }
            *label = label_of_root[root];
        }
    }
    next as usize
}
