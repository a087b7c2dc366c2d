//! The ExaTrkX inference pipeline, free of Triton: features of one event in, one track label
//! per spacepoint out. Used by the backend, the CLI, tests and benchmarks.
//!
//! Stages, one module each, behind the interfaces of `stage`: `embedding` (metric learning),
//! graph construction by `frnn` (radius graph on a grid) or `module_map`, `edge_classifier`
//! (filter, GNN), `track_building` (connected components, walkthrough), `track_quality` (the candidates'
//! classifier), `fit` (helix parameters); `pipeline` composes them; `gpu` holds the CUDA stages. Contracts (features, edge convention, parameters,
//! model interfaces): `docs/DESIGN.md`.

pub mod allocator;
mod config;
pub mod edge_classifier;
pub mod edges;
pub mod embedding;
mod error;
mod event;
pub mod fit;
pub mod frnn;
mod fused;
pub mod gpu;
mod model;
pub mod module_map;
pub mod npy;
mod pipeline;
pub mod stage;
pub mod track_building;
pub mod track_quality;

pub use allocator::{tune_allocator, AllocatorTuning};
pub use config::{
    DeviceKind, GraphMethod, PipelineConfig, Precision, TrackBuilder, PARAMETER_KEYS,
};
pub use error::{PipelineError, Result};
pub use event::{EventInput, EventOutput, OutputRequest, StageTiming, TrackParams};
/// Whether this CPU runs the fused filter and GNN (`cpu_kernels` `auto`).
pub use fused::available as fused_kernels_available;
pub use pipeline::Pipeline;
pub use stage::{ExecutionContext, TrackLabels};
