//! The pipeline object: builds the stages from the settings and runs them in order on one event,
//! timing each (`EventOutput::timings`, `tracing` spans and events).
use std::time::Instant;

use tracing::{debug, debug_span, info, info_span};

use crate::config::{DeviceKind, GraphMethod, PipelineConfig, TrackBuilder, MAX_REFINE_PASSES};
use crate::edge_classifier::{EdgeClassifierConfig, TorchEdgeClassifier};
use crate::embedding::{Embedding, EmbeddingConfig};
use crate::error::{PipelineError, Result};
use crate::event::{EventInput, EventOutput, OutputRequest, StageTiming};
use crate::fit::{fit_tracks, FitConfig};
use crate::frnn::{RadiusGraph, RadiusGraphConfig};
use crate::gpu::components::CudaConnectedComponents;
use crate::gpu::frnn::CudaRadiusGraph;
use crate::module_map::{ModuleMap, ModuleMapGraph};
use crate::stage::{
    host_slice, EdgeClassifier, EventData, ExecutionContext, GraphConstruction, TrackBuilding,
};
use crate::track_building::{ConnectedComponents, ScoredEdges, Walkthrough};
use crate::track_quality::TrackQuality;

/// Stage names of the refining GNN passes, in order.
const REFINE_STAGES: [&str; MAX_REFINE_PASSES] = ["gnn_refine", "gnn_refine2", "gnn_refine3"];

/// The loaded models and stages of one pipeline (one per Triton model instance).
pub struct Pipeline {
    cfg: PipelineConfig,
    ctx: ExecutionContext,
    num_features: usize,
    embedding: Option<Embedding>,
    graph: Box<dyn GraphConstruction>,
    classifiers: Vec<Box<dyn EdgeClassifier>>,
    track_builder: Box<dyn TrackBuilding>,
    track_quality: Option<TrackQuality>,
    fit: FitConfig,
}

/// Run one stage inside a debug span and record its wall time. On a GPU the stage's queued
/// work is waited for, so that the time is the stage's own (the stages synchronise anyway when
/// they read sizes back, so this costs little).
fn timed<T>(
    ctx: &ExecutionContext,
    timings: &mut Vec<StageTiming>,
    stage: &'static str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let span = debug_span!("stage", stage);
    let _entered = span.enter();
    let start = Instant::now();
    let out = f().and_then(|v| ctx.synchronize().map(|()| v));
    let seconds = start.elapsed().as_secs_f64();
    debug!(
        stage,
        ms = seconds * 1e3,
        ok = out.is_ok(),
        "stage finished"
    );
    timings.push(StageTiming { stage, seconds });
    out
}

/// The graph construction for the settings and the device.
fn graph_stage(cfg: &PipelineConfig, ctx: &ExecutionContext) -> Result<Box<dyn GraphConstruction>> {
    let radius = RadiusGraphConfig {
        radius: cfg.radius,
        knn: cfg.knn,
    };
    Ok(match (cfg.graph_construction, ctx.device()) {
        (GraphMethod::Radius, DeviceKind::Cpu) => Box::new(RadiusGraph { cfg: radius }),
        (GraphMethod::Radius, DeviceKind::Cuda(_)) => Box::new(CudaRadiusGraph { cfg: radius }),
        // The module map reads the host input; its edges are copied to the device once.
        (GraphMethod::ModuleMap, DeviceKind::Cpu | DeviceKind::Cuda(_)) => {
            Box::new(ModuleMapGraph {
                map: ModuleMap::load(&cfg.module_map_path())?,
            })
        }
    })
}

/// The track builder for the settings and the device.
fn track_building_stage(cfg: &PipelineConfig, ctx: &ExecutionContext) -> Box<dyn TrackBuilding> {
    match (cfg.track_builder, ctx.device()) {
        (TrackBuilder::ConnectedComponents, DeviceKind::Cpu) => Box::new(ConnectedComponents {
            min_track_length: cfg.min_track_length,
        }),
        (TrackBuilder::ConnectedComponents, DeviceKind::Cuda(_)) => {
            Box::new(CudaConnectedComponents {
                min_track_length: cfg.min_track_length,
            })
        }
        // The walkthrough is sequential: on the CPU, on one copy of the surviving edges.
        (TrackBuilder::Walkthrough, DeviceKind::Cpu | DeviceKind::Cuda(_)) => {
            Box::new(Walkthrough {
                cfg: cfg.walkthrough(),
            })
        }
    }
}

impl Pipeline {
    /// Load the models named by `cfg` and build the stages for its device.
    pub fn new(cfg: PipelineConfig) -> Result<Self> {
        cfg.validate()?;
        let ctx = ExecutionContext::new(cfg.device, cfg.precision)?;
        let embedding = match cfg.graph_construction {
            GraphMethod::Radius => Some(Embedding::load(
                &EmbeddingConfig {
                    model: cfg.embedding_path(),
                    batch: cfg.embedding_batch,
                },
                &ctx,
            )?),
            GraphMethod::ModuleMap => None,
        };
        let graph = graph_stage(&cfg, &ctx)?;
        let filter = TorchEdgeClassifier::load(
            &EdgeClassifierConfig {
                name: "filter",
                model: cfg.filter_path(),
                cut: cfg.filter_cut,
                chunk: Some(if ctx.gpu().is_some() {
                    cfg.gpu_filter_chunk
                } else {
                    cfg.filter_chunk
                }),
                fused: cfg.fused_kernels,
            },
            &ctx,
        )?;
        // With refining passes each pass before the last only thins the graph (at its
        // gnn_refine_cut) and the last one's scores meet gnn_cut.
        let gnn_stage = |name, model, cut| {
            TorchEdgeClassifier::load(
                &EdgeClassifierConfig {
                    name,
                    model,
                    cut,
                    chunk: None,
                    fused: cfg.fused_kernels,
                },
                &ctx,
            )
        };
        let mut classifiers = vec![filter];
        let thinning = &cfg.gnn_refine_cut;
        let first_cut = thinning.first().copied().unwrap_or(cfg.gnn_cut);
        classifiers.push(gnn_stage("gnn", cfg.gnn_path(), first_cut)?);
        for (pass, (name, model)) in REFINE_STAGES.iter().zip(cfg.gnn_refine_paths()).enumerate() {
            let cut = thinning.get(pass + 1).copied().unwrap_or(cfg.gnn_cut);
            classifiers.push(gnn_stage(name, model, cut)?);
        }

        // Every network must read the same feature width.
        let mut models: Vec<_> = classifiers.iter().map(|c| c.model()).collect();
        if let Some(e) = &embedding {
            models.insert(0, e.model());
        }
        let num_features = models[0].int_method("num_features")?;
        for m in &models[1..] {
            let n = m.int_method("num_features")?;
            if n != num_features {
                return Err(PipelineError::ModelLoad {
                    path: m.path().display().to_string(),
                    reason: format!(
                        "expects {n} features but {} expects {num_features}",
                        models[0].path().display()
                    ),
                });
            }
        }
        let track_builder = track_building_stage(&cfg, &ctx);
        let track_quality = cfg
            .track_model_path()
            .map(|path| TrackQuality::load(&path))
            .transpose()?;
        if let DeviceKind::Cuda(i) = cfg.device {
            // The weights were copied on libtorch's default stream; events run on ours.
            tch::Cuda::synchronize(i as i64);
        }
        info!(
            device = ?cfg.device,
            graph = ?cfg.graph_construction,
            builder = ?cfg.track_builder,
            precision = ?cfg.precision,
            num_features,
            "pipeline loaded"
        );
        Ok(Self {
            cfg,
            ctx,
            num_features,
            embedding,
            graph,
            classifiers: classifiers
                .into_iter()
                .map(|c| Box::new(c) as Box<dyn EdgeClassifier>)
                .collect(),
            track_builder,
            track_quality,
            fit: FitConfig::default(),
        })
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// The track-quality stage, when `track_model` is set.
    pub fn track_quality(&self) -> Option<&TrackQuality> {
        self.track_quality.as_ref()
    }

    pub fn context(&self) -> &ExecutionContext {
        &self.ctx
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
        match input.module_ids {
            Some(ids) if ids.len() != n => {
                return Err(PipelineError::Input(format!(
                    "MODULE_ID has {} entries for {n} spacepoints",
                    ids.len()
                )))
            }
            None if self.cfg.graph_construction == GraphMethod::ModuleMap => {
                return Err(PipelineError::Input(
                    "graph_construction = module_map needs the module id of every spacepoint \
                     (input MODULE_ID)"
                        .into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Run every stage on one event.
    pub fn run(&self, input: &EventInput, want: OutputRequest) -> Result<EventOutput> {
        self.check_input(input)?;
        let n = input.num_spacepoints();
        let span = info_span!("event", spacepoints = n);
        let _entered = span.enter();
        let mut out = EventOutput {
            labels: vec![-1; n],
            ..Default::default()
        };
        let _no_grad = tch::no_grad_guard();
        if self.config().intra_op_threads > 0 {
            // per calling thread for OpenMP (each Triton instance has its own thread)
            tch::set_num_threads(self.config().intra_op_threads as i32);
        }
        let timings = &mut out.timings;
        let ctx = &self.ctx;
        let _stream = ctx.enter_event()?;

        let mut event = EventData::new(ctx, input)?;
        if n > 0 {
            if let Some(embedding) = &self.embedding {
                timed(ctx, timings, "embedding", || embedding.run(ctx, &mut event))?;
            }
            timed(ctx, timings, "graph", || self.graph.build(ctx, &mut event))?;
        }
        out.graph_sizes[0] = event.num_edges();
        for (k, classifier) in self.classifiers.iter().enumerate() {
            if event.num_edges() > 0 {
                timed(ctx, timings, classifier.name(), || {
                    classifier.classify(ctx, &mut event)
                })?;
            }
            out.graph_sizes[(k + 1).min(2)] = event.num_edges();
        }
        let mut tracks = timed(ctx, timings, "tracks", || {
            self.track_builder.build_tracks(ctx, &event)
        })?;
        if let Some(quality) = &self.track_quality {
            tracks = timed(ctx, timings, "track_quality", || {
                let (index, scores) = event.host_scored_edges("track_quality")?;
                let edges = ScoredEdges::from_index(&index, &scores);
                let (features, cut) = (input.features, self.cfg.track_cut);
                quality.select(features, input.num_features, &tracks, edges, cut)
            })?;
        }
        out.labels = tracks.labels;
        out.num_tracks = tracks.num_tracks;

        if want.edges {
            out.edge_index = Some(host_slice::<i64>(&event.edge_index, "output")?.to_vec());
            out.edge_scores = Some(match &event.edge_scores {
                Some(s) => host_slice::<f32>(s, "output")?.to_vec(),
                None => Vec::new(),
            });
        }
        if want.tracks {
            let tracks = timed(ctx, &mut out.timings, "fit", || {
                Ok(fit_tracks(
                    input.features,
                    input.num_features,
                    &out.labels,
                    out.num_tracks,
                    &self.fit,
                ))
            })?;
            out.tracks = Some(tracks);
        }
        info!(
            spacepoints = n,
            graph_edges = out.graph_sizes[0],
            filter_edges = out.graph_sizes[1],
            gnn_edges = out.graph_sizes[2],
            tracks = out.num_tracks,
            ms = out.total_seconds() * 1e3,
            "event finished"
        );
        Ok(out)
    }
}
