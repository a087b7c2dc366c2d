use thiserror::Error;

/// Everything that can go wrong in the pipeline; messages name the input or setting at fault.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load model '{path}': {reason}")]
    ModelLoad { path: String, reason: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("torch error in {stage}: {source}")]
    Torch {
        stage: &'static str,
        #[source]
        source: tch::TchError,
    },
    #[error("device error: {0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, PipelineError>;
