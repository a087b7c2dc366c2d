//! The ExaTrkX inference pipeline, free of Triton: features of one event in, one track label
//! per spacepoint out. Used by the backend, the CLI, tests and benchmarks.
//!
//! Contracts (features, edge convention, parameters, model interfaces): `docs/DESIGN.md`.

mod config;
mod error;
mod pipeline;

pub use config::{
    DeviceKind, GraphMethod, PipelineConfig, Precision, TrackBuilder, PARAMETER_KEYS,
};
pub use error::{PipelineError, Result};
pub use pipeline::{EventInput, EventOutput, OutputRequest, Pipeline, StageTiming, TrackParams};
