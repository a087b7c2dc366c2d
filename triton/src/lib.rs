//! A small safe layer over Triton's backend C API, so that a backend never touches raw
//! pointers: owned requests and responses (released or deleted on drop), `Result` errors
//! turned into `TRITONSERVER_Error*` only at the boundary, the model configuration as typed
//! structs, inputs gathered from several buffers with their sizes checked, outputs through
//! the response API, logging into the server log, statistics, and the `Backend` trait with
//! the `extern "C"` entry points (`declare_backend!`), each guarded by `catch_unwind`.

pub mod backend;
pub mod config;
pub mod dtype;
mod error;
#[cfg(test)]
mod fake_triton;
pub mod log;
pub mod model;
pub mod request;
pub mod response;
pub mod stats;

pub use backend::{catch_panic, Backend};
pub use config::{ModelConfig, TensorConfig};
pub use dtype::{DataType, Element};
pub use error::{Error, ErrorCode, Result};
pub use model::{BackendHandle, InstanceKind, Model, ModelInstance};
pub use request::{Input, MemoryType, Request};
pub use response::Response;
pub use stats::RequestTimer;

/// The raw FFI, for the entry points `declare_backend!` emits.
pub use triton_sys as sys;
