//! Edge classification by a TorchScript network `(x, edge_index) -> logits`: the filter (an MLP
//! over both edge ends, run in chunks of edges) and the GNN (whole graph). Edges whose sigmoid
//! score is above the cut survive, in their order. On a CPU in fp32 the filter and the GNN run
//! through the fused kernels of `fused/` when those reproduce the files.
use tch::{Device, Kind, Tensor};
use tracing::info;

use crate::error::Result;
use crate::fused::{self, FusedKernel};
use crate::model::TorchModel;
use crate::stage::{
    edge_tensor, host_slice, torch_error, EdgeClassifier, EventData, ExecutionContext,
};

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
    /// Try the fused CPU kernel of this classifier (`name` filter or gnn), on a CPU context in
    /// fp32.
    pub fused: bool,
}

pub struct TorchEdgeClassifier {
    name: &'static str,
    model: TorchModel,
    cut: f32,
    chunk: Option<usize>,
    /// The fused CPU kernel run instead of libtorch, if any.
    fused: Option<Box<dyn FusedKernel>>,
}

impl TorchEdgeClassifier {
    pub fn load(cfg: &EdgeClassifierConfig, ctx: &ExecutionContext) -> Result<Self> {
        let model = TorchModel::load(&cfg.model, ctx)?;
        let cpu_fp32 = ctx.torch_device() == Device::Cpu && ctx.network_kind() == Kind::Float;
        let fused = if cfg.fused && cpu_fp32 && fused::available() {
            fused::load(cfg.name, &model)?
        } else {
            None
        };
        if cpu_fp32 {
            info!(
                stage = cfg.name,
                fused = fused.is_some(),
                "CPU edge classifier kernel chosen"
            );
        }
        Ok(Self {
            name: cfg.name,
            model,
            cut: cfg.cut,
            chunk: cfg.chunk.map(|c| c.max(1)),
            fused,
        })
    }

    /// Whether the fused CPU kernel scores the edges (instead of libtorch).
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
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

    fn classify(&self, ctx: &ExecutionContext, event: &mut EventData) -> Result<()> {
        if let Some(fused) = &self.fused {
            return self.classify_fused(fused.as_ref(), ctx, event);
        }
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

impl TorchEdgeClassifier {
    /// `classify` on the host with the fused kernel: the same cut, the same order.
    fn classify_fused(
        &self,
        fused: &dyn FusedKernel,
        ctx: &ExecutionContext,
        event: &mut EventData,
    ) -> Result<()> {
        let index = host_slice::<i64>(&event.edge_index, self.name)?;
        let (src, dst) = index.split_at(index.len() / 2);
        let input = event.input;
        let scores = fused.scores(input.features, input.num_features, src, dst);
        let kept: Vec<usize> = (0..scores.len())
            .filter(|&i| scores[i] > self.cut)
            .collect();
        let new_index: Vec<i64> = kept
            .iter()
            .map(|&i| src[i])
            .chain(kept.iter().map(|&i| dst[i]))
            .collect();
        let kept_scores: Vec<f32> = kept.iter().map(|&i| scores[i]).collect();
        drop(index);
        event.edge_index = edge_tensor(&new_index, ctx.torch_device(), self.name)?;
        event.edge_scores =
            Some(Tensor::f_from_slice(&kept_scores).map_err(torch_error(self.name))?);
        Ok(())
    }

    /// `[E]` sigmoid scores of the edges `[src..., dst...]` of the `[N, num_features]`
    /// spacepoints from the fused kernel, `None` when this classifier does not use it.
    pub fn fused_scores(
        &self,
        features: &[f32],
        num_features: usize,
        edge_index: &[i64],
    ) -> Option<Vec<f32>> {
        let (src, dst) = edge_index.split_at(edge_index.len() / 2);
        let fused = self.fused.as_ref()?;
        Some(fused.scores(features, num_features, src, dst))
    }
}
