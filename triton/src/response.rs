//! Responses: owned until sent (deleted on drop otherwise), outputs allocated through Triton's
//! response API and filled from slices.
use std::ffi::CString;
use std::ptr;

use triton_sys as sys;

use crate::dtype::{as_bytes, element_count, Element};
use crate::error::{check, Error, Result};
use crate::request::{MemoryType, Request};

/// The response to one request. Send it with [`Response::send`]; a response dropped unsent is
/// deleted (the request then gets no answer from it, so the execute loop always sends).
pub struct Response {
    raw: *mut sys::TRITONBACKEND_Response,
}

unsafe impl Send for Response {}

impl Response {
    pub fn new(request: &Request) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: the request is live; we own the new response.
        check(
            unsafe { sys::TRITONBACKEND_ResponseNew(&mut raw, request.raw()) },
            "TRITONBACKEND_ResponseNew",
        )?;
        Ok(Self { raw })
    }

    /// Add output `name` of `shape`, copying `data` into the buffer Triton allocates for it.
    pub fn output<T: Element>(&mut self, name: &str, shape: &[i64], data: &[T]) -> Result<()> {
        let count = element_count(shape).map_err(|e| e.context(format!("output '{name}'")))?;
        if count != data.len() {
            return Err(Error::internal(format!(
                "output '{name}' has shape {shape:?} ({count} values) but {} values were given",
                data.len()
            )));
        }
        let c_name = CString::new(name)
            .map_err(|_| Error::internal(format!("output name {name:?} contains NUL")))?;
        let mut output = ptr::null_mut();
        // SAFETY: valid response, name and shape; the output belongs to the response.
        check(
            unsafe {
                sys::TRITONBACKEND_ResponseOutput(
                    self.raw,
                    &mut output,
                    c_name.as_ptr(),
                    T::DATA_TYPE.to_raw(),
                    shape.as_ptr(),
                    shape.len() as u32,
                )
            },
            "TRITONBACKEND_ResponseOutput",
        )
        .map_err(|e| e.context(format!("output '{name}'")))?;
        let bytes = as_bytes(data);
        let mut buffer = ptr::null_mut();
        let mut memory_type = sys::TRITONSERVER_MEMORY_CPU;
        let mut memory_type_id = 0i64;
        // SAFETY: valid output; we ask for host memory and check what we get.
        check(
            unsafe {
                sys::TRITONBACKEND_OutputBuffer(
                    output,
                    &mut buffer,
                    bytes.len() as u64,
                    &mut memory_type,
                    &mut memory_type_id,
                )
            },
            "TRITONBACKEND_OutputBuffer",
        )
        .map_err(|e| e.context(format!("output '{name}'")))?;
        let memory = MemoryType::from_raw(memory_type);
        if !memory.is_host() {
            return Err(Error::unsupported(format!(
                "output '{name}' was given {memory:?} memory (device {memory_type_id}); this \
                 backend writes outputs to host memory only (do not use CUDA shared memory for its \
                 outputs)"
            )));
        }
        if !bytes.is_empty() {
            if buffer.is_null() {
                return Err(Error::internal(format!(
                    "Triton returned no buffer for output '{name}' ({} bytes)",
                    bytes.len()
                )));
            }
            // SAFETY: Triton allocated `bytes.len()` writable host bytes at `buffer`.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len()) };
        }
        Ok(())
    }

    /// Send the response, final, with the outputs added so far or with `error` instead.
    pub fn send(self, error: Option<&Error>) -> Result<()> {
        let raw = self.raw;
        std::mem::forget(self);
        let err = error.map_or(ptr::null_mut(), |e| e.clone().into_raw());
        // SAFETY: Triton takes the response whatever the outcome; the error stays ours.
        let status = unsafe {
            sys::TRITONBACKEND_ResponseSend(raw, sys::TRITONSERVER_RESPONSE_COMPLETE_FINAL, err)
        };
        if !err.is_null() {
            unsafe { sys::TRITONSERVER_ErrorDelete(err) };
        }
        check(status, "TRITONBACKEND_ResponseSend")
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // SAFETY: the response was never sent, so it is still ours to delete.
        let err = unsafe { sys::TRITONBACKEND_ResponseDelete(self.raw) };
        if let Err(e) = check(err, "TRITONBACKEND_ResponseDelete") {
            crate::log_error!("failed to delete an unsent response: {e}");
        }
    }
}
