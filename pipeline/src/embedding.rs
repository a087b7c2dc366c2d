//! Metric-learning embedding: the TorchScript network maps every spacepoint's features to a
//! point in a small space where spacepoints of one track lie close together.
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::model::TorchModel;
use crate::stage::{torch_error, EventData, ExecutionContext};

/// Settings of the embedding stage.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingConfig {
    pub model: std::path::PathBuf,
    /// Spacepoints per network call (bounds the activations' memory).
    pub batch: usize,
}

pub struct Embedding {
    model: TorchModel,
    batch: usize,
    dim: usize,
}

impl Embedding {
    pub fn load(cfg: &EmbeddingConfig, ctx: &ExecutionContext) -> Result<Self> {
        let model = TorchModel::load(&cfg.model, ctx)?;
        let dim = model.int_method("embedding_dim")?;
        Ok(Self {
            model,
            batch: cfg.batch.max(1),
            dim,
        })
    }

    pub(crate) fn model(&self) -> &TorchModel {
        &self.model
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `[N, D]` f32 embedding of `[N, F]` features, `batch` rows per call.
    pub fn embed(&self, features: &Tensor) -> Result<Tensor> {
        let n = features.size()[0];
        let mut parts = Vec::new();
        let mut start = 0i64;
        while start < n {
            let len = (self.batch as i64).min(n - start);
            let rows = features.narrow(0, start, len);
            let out = self.model.forward("embedding", &[&rows])?;
            if out.size() != [len, self.dim as i64] {
                return Err(self.model.bad_output(format!(
                    "output shape {:?} for {len} spacepoints, expected [{len}, {}]",
                    out.size(),
                    self.dim
                )));
            }
            parts.push(
                out.f_to_kind(Kind::Float)
                    .map_err(torch_error("embedding"))?,
            );
            start += len;
        }
        if parts.len() == 1 {
            return Ok(parts.pop().unwrap_or_default());
        }
        Tensor::f_cat(&parts, 0).map_err(torch_error("embedding"))
    }

    /// The stage: sets `event.embedding`.
    pub fn run(&self, _ctx: &ExecutionContext, event: &mut EventData) -> Result<()> {
        event.embedding = Some(self.embed(&event.features)?);
        Ok(())
    }
}
