//! A TorchScript network loaded for one pipeline: on the context's device, in its precision,
//! in eval mode.
use std::path::{Path, PathBuf};

use tch::{CModule, IValue, Tensor};

use crate::error::{PipelineError, Result};
use crate::stage::{torch_error, ExecutionContext};

pub(crate) struct TorchModel {
    module: CModule,
    path: PathBuf,
}

impl TorchModel {
    pub fn load(path: &Path, ctx: &ExecutionContext) -> Result<Self> {
        let fail = |reason: String| PipelineError::ModelLoad {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let mut module =
            CModule::load_on_device(path, ctx.torch_device()).map_err(|e| fail(e.to_string()))?;
        module.set_eval();
        if ctx.network_kind() != tch::Kind::Float {
            module.to(ctx.torch_device(), ctx.network_kind(), false);
        }
        Ok(Self {
            module,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A method without arguments that returns a positive int (`num_features`, `embedding_dim`).
    pub fn int_method(&self, name: &str) -> Result<usize> {
        match self.module.method_is::<IValue>(name, &[]) {
            Ok(IValue::Int(n)) if n > 0 => Ok(n as usize),
            other => Err(PipelineError::ModelLoad {
                path: self.path.display().to_string(),
                reason: format!("method {name}() must return a positive int, got {other:?}"),
            }),
        }
    }

    /// The network's parameters by name (`mlp.0.weight`, ...).
    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor)>> {
        self.module
            .named_parameters()
            .map_err(|e| PipelineError::ModelLoad {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })
    }

    pub fn forward(&self, stage: &'static str, inputs: &[&Tensor]) -> Result<Tensor> {
        self.module.forward_ts(inputs).map_err(torch_error(stage))
    }

    /// The error for an output of the wrong shape, naming the file.
    pub fn bad_output(&self, what: String) -> PipelineError {
        PipelineError::Input(format!("model {}: {what}", self.path.display()))
    }
}
