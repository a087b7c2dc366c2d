//! libtorch's current CUDA stream: the `cxx` bridge to `torch_stream.cc`, and a guard that puts
//! libtorch on a stream of ours for the duration of one event.
//!
//! libtorch keeps a current stream per device and thread; every op (and the caching allocator)
//! uses it. Making our stream current means the networks, the torch ops of the GPU stages and our
//! own kernels are ordered on one stream, with no synchronisation at the hand-offs.

#[cxx::bridge(namespace = "exatrkx")]
mod ffi {
    /// A c10 stream in packed form (`c10::Stream::pack3`).
    #[derive(Clone, Copy, Debug)]
    struct TorchStream {
        id: i64,
        device_index: i8,
        device_type: i8,
    }

    unsafe extern "C++" {
        include!("exatrkx-pipeline/src/gpu/torch_stream.h");

        fn exchange_cuda_stream(handle: u64, device: i8) -> Result<TorchStream>;
        fn restore_stream(previous: &TorchStream) -> Result<()>;
    }
}

/// While alive, libtorch runs on the given CUDA stream on this thread; dropping it makes the
/// previous stream current again.
pub(crate) struct TorchStreamGuard {
    previous: ffi::TorchStream,
}

impl TorchStreamGuard {
    /// Make `handle` (a `CUstream` on `device`) libtorch's current stream. Fails when libtorch
    /// has no CUDA or names external streams differently from what the shim expects.
    pub fn enter(handle: u64, device: usize) -> Result<Self, String> {
        let device = i8::try_from(device).map_err(|_| format!("CUDA device {device} too large"))?;
        ffi::exchange_cuda_stream(handle, device)
            .map(|previous| Self { previous })
            .map_err(|e| e.what().to_string())
    }
}

impl Drop for TorchStreamGuard {
    fn drop(&mut self) {
        if let Err(e) = ffi::restore_stream(&self.previous) {
            tracing::warn!(error = e.what(), "could not restore libtorch's CUDA stream");
        }
    }
}
