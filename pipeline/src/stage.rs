//! The stage interfaces (graph construction, edge classification, track building), the execution
//! context they run in, and the bundle of tensors that flows from stage to stage.
//!
//! Every stage has a CPU implementation. The GPU ones (`crate::gpu`) are chosen in
//! `pipeline.rs` from the context's device; a stage without one runs its CPU implementation on
//! host copies of the tensors (the networks still run on the GPU).
use std::ops::Deref;
use std::sync::Arc;

use tch::kind::Element;
use tch::{Device, Kind, Tensor};

use crate::config::{DeviceKind, Precision};
use crate::error::{PipelineError, Result};
use crate::event::EventInput;
use crate::gpu::{EventStream, GpuRuntime};

/// Where the stages of one pipeline run. One per pipeline (per Triton model instance); on a GPU
/// it holds the instance's CUDA runtime (its stream, the kernels).
#[derive(Clone, Debug)]
pub struct ExecutionContext {
    device: DeviceKind,
    torch_device: Device,
    network_kind: Kind,
    gpu: Option<Arc<GpuRuntime>>,
}

impl ExecutionContext {
    pub fn new(device: DeviceKind, precision: Precision) -> Result<Self> {
        let torch_device = match device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda(i) => {
                if !tch::Cuda::is_available() || i >= tch::Cuda::device_count() as usize {
                    return Err(PipelineError::Device(format!(
                        "CUDA device {i} requested but only {} GPU(s) are available",
                        if tch::Cuda::is_available() {
                            tch::Cuda::device_count()
                        } else {
                            0
                        }
                    )));
                }
                Device::Cuda(i)
            }
        };
        let network_kind =
            match (precision, device) {
                (Precision::Fp32, _) => Kind::Float,
                (Precision::Bf16, _) => Kind::BFloat16,
                (Precision::Fp16, DeviceKind::Cuda(_)) => Kind::Half,
                (Precision::Fp16, DeviceKind::Cpu) => return Err(PipelineError::Config(
                    "parameter 'precision' = 'fp16' needs a GPU; use 'bf16' or 'fp32' on the CPU"
                        .into(),
                )),
            };
        let gpu = match device {
            DeviceKind::Cpu => None,
            DeviceKind::Cuda(i) => Some(Arc::new(GpuRuntime::new(i)?)),
        };
        Ok(Self {
            device,
            torch_device,
            network_kind,
            gpu,
        })
    }

    pub fn cpu() -> Self {
        Self {
            device: DeviceKind::Cpu,
            torch_device: Device::Cpu,
            network_kind: Kind::Float,
            gpu: None,
        }
    }

    /// The CUDA runtime of a GPU context.
    pub fn gpu(&self) -> Option<&GpuRuntime> {
        self.gpu.as_deref()
    }

    /// For the duration of one event: on a GPU, libtorch on the instance's stream.
    pub fn enter_event(&self) -> Result<Option<EventStream>> {
        self.gpu.as_ref().map(|g| g.enter()).transpose()
    }

    /// Wait for the device's queued work (stage timings); nothing to do on the CPU.
    pub fn synchronize(&self) -> Result<()> {
        self.gpu.as_ref().map_or(Ok(()), |g| g.synchronize())
    }

    pub fn device(&self) -> DeviceKind {
        self.device
    }

    pub fn torch_device(&self) -> Device {
        self.torch_device
    }

    /// Element type of the networks' weights and inputs (`precision`).
    pub fn network_kind(&self) -> Kind {
        self.network_kind
    }
}

/// The tensors of one event, handed from stage to stage. Tensors live on the context's device.
pub struct EventData<'a> {
    /// The event as given (host memory).
    pub input: &'a EventInput<'a>,
    /// Feature column 0 (r / 1000) per spacepoint, host copy: the key of the edge orientation.
    pub radius_key: Vec<f32>,
    /// The same f32 `[N]` on the GPU (GPU contexts only), for the GPU graph construction.
    pub radius_key_on_device: Option<Tensor>,
    /// `[N, F]` node features in the networks' precision.
    pub features: Tensor,
    /// `[N, D]` f32 embedding (radius graph construction only).
    pub embedding: Option<Tensor>,
    /// `[2, E]` int64 edges in the convention of docs/DESIGN.md.
    pub edge_index: Tensor,
    /// `[E]` f32 sigmoid scores of the last edge classifier that ran.
    pub edge_scores: Option<Tensor>,
}

impl<'a> EventData<'a> {
    pub fn new(ctx: &ExecutionContext, input: &'a EventInput<'a>) -> Result<Self> {
        let n = input.num_spacepoints() as i64;
        let on_device = Tensor::f_from_slice(input.features)
            .and_then(|t| t.f_view([n, input.num_features as i64]))
            .and_then(|t| t.f_to_device(ctx.torch_device()))
            .map_err(torch_error("features"))?;
        // Column 0 in f32 before the networks' precision may round it.
        let radius_key_on_device = match ctx.torch_device() {
            Device::Cpu => None,
            _ if n == 0 => None,
            _ => Some(
                on_device
                    .f_select(1, 0)
                    .and_then(|c| c.f_contiguous())
                    .map_err(torch_error("features"))?,
            ),
        };
        let features = on_device
            .f_to_kind(ctx.network_kind())
            .map_err(torch_error("features"))?;
        Ok(Self {
            input,
            radius_key: input.column(0),
            radius_key_on_device,
            features,
            embedding: None,
            edge_index: Tensor::zeros([2, 0], (Kind::Int64, ctx.torch_device())),
            edge_scores: None,
        })
    }

    pub fn num_spacepoints(&self) -> usize {
        self.radius_key.len()
    }

    pub fn num_edges(&self) -> usize {
        self.edge_index.size().get(1).copied().unwrap_or(0) as usize
    }

    /// Host views of the edges (`[src..., dst...]`) and their scores, 1 for every edge when no
    /// classifier scored them.
    pub fn host_scored_edges(
        &self,
        stage: &'static str,
    ) -> Result<(HostSlice<'_, i64>, HostSlice<'_, f32>)> {
        let index = host_slice::<i64>(&self.edge_index, stage)?;
        let scores = match &self.edge_scores {
            Some(s) => host_slice::<f32>(s, stage)?,
            None => HostSlice::Owned(vec![1.0; index.len() / 2]),
        };
        Ok((index, scores))
    }
}

/// Builds the candidate edges of an event (`edge_index`).
pub trait GraphConstruction: Send + Sync {
    fn build(&self, ctx: &ExecutionContext, event: &mut EventData) -> Result<()>;
}

/// Scores the edges (`edge_scores`) and keeps those above its cut (`edge_index`, `edge_scores`).
pub trait EdgeClassifier: Send + Sync {
    /// Stage name in timings and logs (`filter`, `gnn`).
    fn name(&self) -> &'static str;
    fn classify(&self, ctx: &ExecutionContext, event: &mut EventData) -> Result<()>;
}

/// Labels per spacepoint, `0..num_tracks`, -1 for none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackLabels {
    pub labels: Vec<i64>,
    pub num_tracks: usize,
    /// Per track: found by a later pass (`walk_rescue_cut` or `walk_chain_cut`).
    pub second_pass: Vec<bool>,
}

/// Reads track candidates off the classified graph.
pub trait TrackBuilding: Send + Sync {
    fn build_tracks(&self, ctx: &ExecutionContext, event: &EventData) -> Result<TrackLabels>;
}

pub(crate) fn torch_error(stage: &'static str) -> impl Fn(tch::TchError) -> PipelineError {
    move |source| PipelineError::Torch { stage, source }
}

/// Host view of a tensor's elements: borrowed when the tensor already is a contiguous CPU tensor
/// of the right kind, else a converted copy.
pub enum HostSlice<'t, T> {
    Borrowed(&'t [T]),
    Owned(Vec<T>),
}

impl<T> Deref for HostSlice<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            HostSlice::Borrowed(s) => s,
            HostSlice::Owned(v) => v,
        }
    }
}

/// All elements of `t` in row-major order on the host.
pub fn host_slice<'t, T: Element + Copy>(
    t: &'t Tensor,
    stage: &'static str,
) -> Result<HostSlice<'t, T>> {
    let numel = t.numel();
    if numel == 0 {
        return Ok(HostSlice::Owned(Vec::new()));
    }
    if t.device() == Device::Cpu && t.kind() == T::KIND && t.is_contiguous() {
        // SAFETY: a contiguous CPU tensor of kind T holds `numel` initialised elements of T at
        // `data_ptr()`; the borrow of `t` keeps the storage alive and nothing writes to it
        // while the pipeline holds this view.
        let data = unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, numel) };
        return Ok(HostSlice::Borrowed(data));
    }
    let host = t
        .f_to_device(Device::Cpu)
        .and_then(|h| h.f_to_kind(T::KIND))
        .and_then(|h| h.f_contiguous())
        .and_then(|h| h.f_view([-1]))
        .map_err(torch_error(stage))?;
    Ok(HostSlice::Owned(
        Vec::<T>::try_from(&host).map_err(torch_error(stage))?,
    ))
}

/// `[2, E]` int64 tensor on `device` from row-major `[src..., dst...]`.
pub fn edge_tensor(index: &[i64], device: Device, stage: &'static str) -> Result<Tensor> {
    let e = (index.len() / 2) as i64;
    Tensor::f_from_slice(index)
        .and_then(|t| t.f_view([2, e]))
        .and_then(|t| t.f_to_device(device))
        .map_err(torch_error(stage))
}
