//! Edge classification by a TorchScript network `(x, edge_index) -> logits`: the filter (an MLP
//! over both edge ends, run in chunks of edges) and the GNN (whole graph). Edges whose sigmoid
//! score is above the cut survive, in their order.
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::model::TorchModel;
use crate::stage::{torch_error, EdgeClassifier, EventData, ExecutionContext};

/// Settings of one edge classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeClassifierConfig {
    /// `filter` or `gnn`: the name in timings and logs.
    pub name: &'static str,
    pub model: std::path::PathBuf,
    /// Keep edges with score > cut.
    pub cut: f32,
    /// Edges per network call; `None` scores the whole graph at once (message passing needs it).
    pub chunk: Option<usize>,
}

pub struct TorchEdgeClassifier {
    name: &'static str,
    model: TorchModel,
    cut: f32,
    chunk: Option<usize>,
}

impl TorchEdgeClassifier {
    pub fn load(cfg: &EdgeClassifierConfig, ctx: &ExecutionContext) -> Result<Self> {
        Ok(Self {
            name: cfg.name,
            model: TorchModel::load(&cfg.model, ctx)?,
            cut: cfg.cut,
            chunk: cfg.chunk.map(|c| c.max(1)),
        })
    }

    pub(crate) fn model(&self) -> &TorchModel {
        &self.model
    }

    /// `[E]` f32 sigmoid scores of the edges.
    pub fn scores(&self, features: &Tensor, edge_index: &Tensor) -> Result<Tensor> {
        let e = edge_index.size()[1];
        let chunk = self.chunk.map_or(e, |c| c as i64).max(1);
        let mut parts = Vec::new();
        let mut start = 0i64;
        while start < e {
            let len = chunk.min(e - start);
            let edges = edge_index.narrow(1, start, len);
            let logits = self.model.forward(self.name, &[features, &edges])?;
            if logits.numel() != len as usize {
                return Err(self.model.bad_output(format!(
                    "output shape {:?} for {len} edges, expected [{len}]",
                    logits.size()
                )));
            }
            let scores = logits
                .f_reshape([len])
                .and_then(|l| l.f_to_kind(Kind::Float))
                .and_then(|l| l.f_sigmoid())
                .map_err(torch_error(self.name))?;
            parts.push(scores);
            start += len;
        }
        match parts.len() {
            0 => Ok(Tensor::zeros([0], (Kind::Float, features.device()))),
            1 => Ok(parts.pop().unwrap_or_default()),
            _ => Tensor::f_cat(&parts, 0).map_err(torch_error(self.name)),
        }
    }
}

impl EdgeClassifier for TorchEdgeClassifier {
    fn name(&self) -> &'static str {
        self.name
    }

    fn classify(&self, _ctx: &ExecutionContext, event: &mut EventData) -> Result<()> {
        let scores = self.scores(&event.features, &event.edge_index)?;
        let keep = scores
            .f_gt(self.cut as f64)
            .and_then(|m| m.f_nonzero())
            .and_then(|k| k.f_view([-1]))
            .map_err(torch_error(self.name))?;
        event.edge_index = event
            .edge_index
            .f_index_select(1, &keep)
            .map_err(torch_error(self.name))?;
        event.edge_scores = Some(
            scores
                .f_index_select(0, &keep)
                .map_err(torch_error(self.name))?,
        );
        Ok(())
    }
}
