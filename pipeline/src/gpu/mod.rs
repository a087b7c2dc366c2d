//! The CUDA side of the pipeline: what a `KIND_GPU` instance runs besides the networks.
//!
//! - [`GpuRuntime`]: one per pipeline (per Triton model instance): the device's primary CUDA
//!   context (the one libtorch uses), a CUDA stream of its own, and the kernels of
//!   `kernels.cu`, compiled by NVRTC for the device when the first pipeline on it loads.
//! - Streams: during an event, the instance's stream is libtorch's current stream
//!   (`torch_stream`), so the networks, the torch ops and our kernels queue on one stream in
//!   order, and instances on one GPU overlap. Where libtorch refuses the external stream, the
//!   runtime uses the legacy default stream for both instead: still ordered, without the overlap.
//! - Memory: every buffer is a torch tensor (the caching allocator, on the current stream); a
//!   kernel gets its address (`device_ptr`). Work on one stream runs in order, so a tensor freed
//!   after a launch cannot be reused before the kernel has run.
//! - Stages: [`frnn::CudaRadiusGraph`] and [`components::CudaConnectedComponents`]; the edge
//!   cuts are torch ops on the device (`edge_classifier.rs`, any device); the walkthrough runs
//!   on the CPU on one copy of the surviving edges.
//!
//! Without a CUDA driver or NVRTC nothing here is touched: CPU pipelines never create a
//! runtime, and creating one reports what is missing instead of panicking (cudarc panics when
//! a library is absent, so the checks come first and creation runs under `catch_unwind`).
pub mod components;
pub mod frnn;
pub mod kernels;
mod libraries;
mod torch_stream;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchArgs, LaunchConfig};
use tch::{Device, Kind, Tensor};

use crate::error::{PipelineError, Result};
pub use kernels::{compile_kernels, kernel_source, CodeTarget};
pub use libraries::{driver_available, nvrtc_available};
use torch_stream::TorchStreamGuard;

/// The CUDA context, stream and kernels of one pipeline.
pub struct GpuRuntime {
    device: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// libtorch runs on `stream` during an event; false: both use the legacy default stream.
    torch_on_stream: bool,
    kernels: Arc<kernels::Kernels>,
}

impl std::fmt::Debug for GpuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRuntime")
            .field("device", &self.device)
            .field("stream", &self.stream.cu_stream())
            .field("torch_on_stream", &self.torch_on_stream)
            .finish()
    }
}

/// The error of a failed CUDA driver call, naming what was being done.
pub(crate) fn driver_error(
    what: &'static str,
) -> impl Fn(cudarc::driver::DriverError) -> PipelineError {
    move |e| PipelineError::Device(format!("{what}: {e}"))
}

/// Run `f`, turning a panic (cudarc panics when a library or symbol is missing) into an error.
pub(crate) fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(PipelineError::Device(format!("{what}: {reason}")))
    })
}

impl GpuRuntime {
    /// Context, stream and kernels on CUDA device `device`.
    pub fn new(device: usize) -> Result<Self> {
        driver_available().map_err(PipelineError::Device)?;
        nvrtc_available().map_err(PipelineError::Device)?;
        no_panic("setting up CUDA", || {
            let ctx = CudaContext::new(device)
                .map_err(driver_error("creating the CUDA context (primary context)"))?;
            // Our buffers are torch tensors; cudarc's own allocations (none) would need events.
            // SAFETY: no CudaSlice is ever created on this context by this crate.
            unsafe { ctx.disable_event_tracking() };
            let kernels = kernels::Kernels::for_context(&ctx)?;
            let stream = ctx
                .new_stream()
                .map_err(driver_error("creating the instance's CUDA stream"))?;
            let (stream, torch_on_stream) =
                match TorchStreamGuard::enter(stream.cu_stream() as u64, device) {
                    Ok(guard) => {
                        drop(guard);
                        (stream, true)
                    }
                    Err(reason) => {
                        tracing::warn!(
                            device,
                            reason,
                            "libtorch cannot run on our CUDA stream; using the default stream \
                             (instances on this GPU will not overlap)"
                        );
                        (ctx.default_stream(), false)
                    }
                };
            tracing::info!(device, torch_on_stream, "CUDA runtime ready");
            Ok(Self {
                device,
                ctx,
                stream,
                torch_on_stream,
                kernels,
            })
        })
    }

    pub fn device(&self) -> usize {
        self.device
    }

    /// Whether libtorch runs on this runtime's own stream during an event.
    pub fn torch_on_stream(&self) -> bool {
        self.torch_on_stream
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn kernels(&self) -> &kernels::Kernels {
        &self.kernels
    }

    /// Make this runtime's stream libtorch's current one on the calling thread until the
    /// returned guard is dropped (one event; Triton may call an instance from several threads).
    pub fn enter(&self) -> Result<EventStream> {
        self.ctx
            .bind_to_thread()
            .map_err(driver_error("binding the CUDA context"))?;
        if !self.torch_on_stream {
            return Ok(EventStream { _guard: None });
        }
        let guard = TorchStreamGuard::enter(self.stream.cu_stream() as u64, self.device)
            .map_err(|e| PipelineError::Device(format!("setting libtorch's CUDA stream: {e}")))?;
        Ok(EventStream {
            _guard: Some(guard),
        })
    }

    /// Wait until everything queued on the stream (our kernels and libtorch's work) is done.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver_error("synchronising the CUDA stream"))
    }

    /// Queue `kernel` over `n` threads in blocks of `threads`; `args` pushes its arguments.
    pub(crate) fn launch<'a>(
        &'a self,
        kernel: &'a CudaFunction,
        n: usize,
        threads: u32,
        name: &'static str,
        args: impl FnOnce(&mut LaunchArgs<'a>),
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let blocks = u32::try_from(n.div_ceil(threads as usize))
            .map_err(|_| PipelineError::Device(format!("{name}: {n} threads is too many")))?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut builder = self.stream.launch_builder(kernel);
        args(&mut builder);
        // SAFETY: the argument lists match the kernels' signatures in kernels.cu (each call
        // site pushes them in order, with the C types of the signature), and every pointer is
        // the address of a live, contiguous CUDA tensor of the kind the kernel reads, on this
        // runtime's device, with as many elements as the kernel indexes.
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(|e| PipelineError::Device(format!("launching {name}: {e}")))
    }
}

/// Keeps libtorch on the instance's stream for one event (see [`GpuRuntime::enter`]).
pub struct EventStream {
    _guard: Option<TorchStreamGuard>,
}

/// Device address of `t`'s first element, for a kernel argument. `t` must be a contiguous CUDA
/// tensor of kind `kind` on `device`; the caller keeps it alive until the kernel has been queued
/// (stream order does the rest).
pub(crate) fn device_ptr(t: &Tensor, kind: Kind, device: usize, what: &str) -> Result<u64> {
    if t.device() != Device::Cuda(device) || t.kind() != kind || !t.is_contiguous() {
        return Err(PipelineError::Device(format!(
            "{what}: expected a contiguous {kind:?} tensor on cuda:{device}, got {:?} on {:?}",
            t.kind(),
            t.device()
        )));
    }
    Ok(t.data_ptr() as u64)
}
