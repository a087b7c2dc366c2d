//! Inference requests: owned (released exactly once, on drop), with their inputs gathered
//! from however many buffers Triton holds them in, and the names of the requested outputs.
use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr;

use triton_sys as sys;

use crate::dtype::{as_bytes_mut, tensor_byte_size, DataType, Element};
use crate::error::{check, get_string, string_from_c, Error, Result};

/// One inference request handed to `TRITONBACKEND_ModelInstanceExecute`. Dropping it releases
/// it back to Triton (`TRITONBACKEND_RequestRelease`), so every request is released exactly
/// once on every path, errors and panics included.
pub struct Request {
    raw: *mut sys::TRITONBACKEND_Request,
}

// Requests may move between threads; Triton does not tie them to the executing thread.
unsafe impl Send for Request {}

impl Request {
    /// Take ownership of a request.
    ///
    /// # Safety
    /// `raw` is a live request passed to execute and not yet released.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Request) -> Self {
        Self { raw }
    }

    pub(crate) fn raw(&self) -> *mut sys::TRITONBACKEND_Request {
        self.raw
    }

    /// The client's request id (may be empty).
    pub fn id(&self) -> String {
        // SAFETY: valid handle; the string lives as long as the request.
        get_string("TRITONBACKEND_RequestId", |id| unsafe {
            sys::TRITONBACKEND_RequestId(self.raw, id)
        })
        .unwrap_or_default()
    }

    /// A short name for messages: `request 'id'`, or `request` without an id.
    pub fn describe(&self) -> String {
        match self.id() {
            id if id.is_empty() => "request".to_string(),
            id => format!("request '{id}'"),
        }
    }

    /// Whether the client cancelled the request.
    pub fn is_cancelled(&self) -> bool {
        let mut cancelled = false;
        // SAFETY: valid handle and out-pointer.
        let status = check(
            unsafe { sys::TRITONBACKEND_RequestIsCancelled(self.raw, &mut cancelled) },
            "TRITONBACKEND_RequestIsCancelled",
        );
        status.is_ok() && cancelled
    }

    /// Names of the inputs the request carries.
    pub fn input_names(&self) -> Result<Vec<String>> {
        self.names(
            "TRITONBACKEND_RequestInputCount",
            sys::TRITONBACKEND_RequestInputCount,
            "TRITONBACKEND_RequestInputName",
            sys::TRITONBACKEND_RequestInputName,
        )
    }

    /// The named input, or `None` when the request does not carry it.
    pub fn input(&self, name: &str) -> Result<Option<Input<'_>>> {
        if !self.input_names()?.iter().any(|n| n == name) {
            return Ok(None);
        }
        let c_name = CString::new(name)
            .map_err(|_| Error::invalid_arg(format!("input name {name:?} contains NUL")))?;
        let mut raw = ptr::null_mut();
        // SAFETY: valid handle, name and out-pointer; the input lives as long as the request.
        check(
            unsafe { sys::TRITONBACKEND_RequestInput(self.raw, c_name.as_ptr(), &mut raw) },
            "TRITONBACKEND_RequestInput",
        )?;
        // SAFETY: `raw` is a live input of this request.
        unsafe { Input::from_raw(raw) }.map(Some)
    }

    /// Names of the outputs the client asked for (Triton fills in every output of the model
    /// configuration when the client names none).
    pub fn requested_outputs(&self) -> Result<Vec<String>> {
        self.names(
            "TRITONBACKEND_RequestOutputCount",
            sys::TRITONBACKEND_RequestOutputCount,
            "TRITONBACKEND_RequestOutputName",
            sys::TRITONBACKEND_RequestOutputName,
        )
    }

    /// A list of names through a count getter and an indexed name getter.
    fn names(
        &self,
        count_call: &str,
        count_fn: CountFn,
        name_call: &str,
        name_fn: NameFn,
    ) -> Result<Vec<String>> {
        let mut count = 0u32;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { count_fn(self.raw, &mut count) }, count_call)?;
        (0..count)
            // SAFETY: `i < count`; the string lives as long as the request.
            .map(|i| get_string(name_call, |name| unsafe { name_fn(self.raw, i, name) }))
            .collect()
    }
}

type CountFn =
    unsafe extern "C" fn(*mut sys::TRITONBACKEND_Request, *mut u32) -> *mut sys::TRITONSERVER_Error;
type NameFn = unsafe extern "C" fn(
    *mut sys::TRITONBACKEND_Request,
    u32,
    *mut *const std::os::raw::c_char,
) -> *mut sys::TRITONSERVER_Error;

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: we own the request and release it once; it is not touched afterwards.
        let err = unsafe {
            sys::TRITONBACKEND_RequestRelease(self.raw, sys::TRITONSERVER_REQUEST_RELEASE_ALL)
        };
        if let Err(e) = check(err, "TRITONBACKEND_RequestRelease") {
            crate::log_error!("failed to release a request: {e}");
        }
    }
}

/// Where a buffer lives (`TRITONSERVER_MemoryType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    Cpu,
    CpuPinned,
    Gpu,
}

impl MemoryType {
    pub(crate) fn from_raw(raw: sys::TRITONSERVER_MemoryType) -> Self {
        match raw {
            sys::TRITONSERVER_MEMORY_CPU => MemoryType::Cpu,
            sys::TRITONSERVER_MEMORY_CPU_PINNED => MemoryType::CpuPinned,
            _ => MemoryType::Gpu,
        }
    }

    /// Host memory the CPU may read and write directly.
    pub fn is_host(self) -> bool {
        matches!(self, MemoryType::Cpu | MemoryType::CpuPinned)
    }
}

/// One input tensor of a request, with the properties Triton reports for it.
pub struct Input<'a> {
    raw: *mut sys::TRITONBACKEND_Input,
    name: String,
    dtype: Option<DataType>,
    shape: Vec<i64>,
    byte_size: u64,
    buffer_count: u32,
    _request: PhantomData<&'a Request>,
}

impl Input<'_> {
    /// # Safety
    /// `raw` is a live input of a request that outlives the returned value.
    unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Input) -> Result<Self> {
        let mut name = ptr::null();
        let mut dtype: sys::TRITONSERVER_DataType = 0;
        let mut shape = ptr::null();
        let mut dims = 0u32;
        let mut byte_size = 0u64;
        let mut buffer_count = 0u32;
        check(
            sys::TRITONBACKEND_InputProperties(
                raw,
                &mut name,
                &mut dtype,
                &mut shape,
                &mut dims,
                &mut byte_size,
                &mut buffer_count,
            ),
            "TRITONBACKEND_InputProperties",
        )?;
        let shape = if shape.is_null() || dims == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(shape, dims as usize).to_vec()
        };
        Ok(Self {
            raw,
            name: string_from_c(name),
            dtype: DataType::from_raw(dtype),
            shape,
            byte_size,
            buffer_count,
            _request: PhantomData,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// `None` for a data type this crate does not know.
    pub fn dtype(&self) -> Option<DataType> {
        self.dtype
    }
    pub fn shape(&self) -> &[i64] {
        &self.shape
    }
    pub fn byte_size(&self) -> u64 {
        self.byte_size
    }
    pub fn buffer_count(&self) -> u32 {
        self.buffer_count
    }

    /// Check data type and rank; the message names the input and what was received.
    pub fn expect(&self, dtype: DataType, rank: usize) -> Result<()> {
        if self.dtype != Some(dtype) {
            let got = self.dtype.map_or("an unknown type", DataType::name);
            return Err(Error::invalid_arg(format!(
                "input '{}' must be {dtype}, got {got}",
                self.name
            )));
        }
        if self.shape.len() != rank {
            return Err(Error::invalid_arg(format!(
                "input '{}' must have rank {rank}, got shape {:?}",
                self.name, self.shape
            )));
        }
        Ok(())
    }

    /// Copy the tensor into a `Vec<T>`, gathering every buffer. Checks that `T` matches the
    /// data type, that the byte size Triton reports equals shape x element size, and that the
    /// buffers add up to it. Host memory only: GPU buffers are refused with a clear error.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.expect(T::DATA_TYPE, self.shape.len())?;
        let expected = tensor_byte_size(T::DATA_TYPE, &self.shape)
            .map_err(|e| e.context(format!("input '{}'", self.name)))?;
        if self.byte_size != expected as u64 {
            return Err(Error::invalid_arg(format!(
                "input '{}' holds {} bytes but shape {:?} of {} needs {expected}",
                self.name,
                self.byte_size,
                self.shape,
                T::DATA_TYPE
            )));
        }
        let mut out = vec![T::default(); expected / T::DATA_TYPE.byte_size().max(1)];
        self.gather_into(as_bytes_mut(&mut out))?;
        Ok(out)
    }

    /// Copy the buffers one after the other into `dest`, which must be exactly filled.
    fn gather_into(&self, dest: &mut [u8]) -> Result<()> {
        let buffers = (0..self.buffer_count).map(|index| {
            let mut base = ptr::null();
            let mut size = 0u64;
            let mut memory_type = sys::TRITONSERVER_MEMORY_CPU;
            let mut memory_type_id = 0i64;
            // SAFETY: `index < buffer_count`; the out-pointers are valid; on input they state
            // the preferred memory (host), which Triton may not honour.
            check(
                unsafe {
                    sys::TRITONBACKEND_InputBuffer(
                        self.raw,
                        index,
                        &mut base,
                        &mut size,
                        &mut memory_type,
                        &mut memory_type_id,
                    )
                },
                "TRITONBACKEND_InputBuffer",
            )?;
            let memory = MemoryType::from_raw(memory_type);
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if !memory.is_host() || size == 0 || base.is_null() {
                return Ok(Buffer {
                    memory,
                    device: memory_type_id,
                    size,
                    bytes: &[][..],
                });
            }
            // SAFETY: Triton guarantees `size` readable bytes at `base` in host memory, alive
            // as long as the request (which outlives `self`).
            let bytes = unsafe { std::slice::from_raw_parts(base.cast::<u8>(), size) };
            Ok(Buffer {
                memory,
                device: memory_type_id,
                size,
                bytes,
            })
        });
        gather(&self.name, &self.shape, buffers, dest)
    }
}

/// One buffer of an input as Triton reports it; `bytes` is empty unless it is in host memory.
struct Buffer<'a> {
    memory: MemoryType,
    device: i64,
    size: usize,
    bytes: &'a [u8],
}

/// Concatenate an input's buffers into `dest`; they must fill it exactly and lie in host memory.
fn gather<'a>(
    name: &str,
    shape: &[i64],
    buffers: impl Iterator<Item = Result<Buffer<'a>>>,
    dest: &mut [u8],
) -> Result<()> {
    let mut offset = 0usize;
    for (index, buffer) in buffers.enumerate() {
        let buffer = buffer?;
        if !buffer.memory.is_host() {
            return Err(Error::unsupported(format!(
                "input '{name}' buffer {index} is in {:?} memory (device {}); this backend reads \
                 inputs from host memory only (do not use CUDA shared memory for its inputs)",
                buffer.memory, buffer.device
            )));
        }
        let end = offset
            .checked_add(buffer.size)
            .filter(|&end| end <= dest.len() && buffer.bytes.len() == buffer.size);
        let Some(end) = end else {
            return Err(Error::invalid_arg(format!(
                "input '{name}' buffers hold more than the {} bytes its shape {shape:?} allows",
                dest.len()
            )));
        };
        dest[offset..end].copy_from_slice(buffer.bytes);
        offset = end;
    }
    if offset != dest.len() {
        return Err(Error::invalid_arg(format!(
            "input '{name}' buffers hold {offset} bytes but its shape {shape:?} needs {}",
            dest.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(bytes: &[u8]) -> Result<Buffer<'_>> {
        Ok(Buffer {
            memory: MemoryType::Cpu,
            device: 0,
            size: bytes.len(),
            bytes,
        })
    }

    #[test]
    fn several_buffers_are_concatenated_in_order() {
        let (a, b, c) = ([1u8, 2, 3], [4u8], [5u8, 6, 7, 8]);
        let mut dest = [0u8; 8];
        gather(
            "X",
            &[2],
            [host(&a), host(&b), host(&[]), host(&c)].into_iter(),
            &mut dest,
        )
        .unwrap();
        assert_eq!(dest, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn too_few_or_too_many_bytes_are_errors_naming_the_input() {
        let mut dest = [0u8; 8];
        let err = gather("FEATURES", &[2], [host(&[1, 2, 3])].into_iter(), &mut dest).unwrap_err();
        assert!(err.message().contains("'FEATURES'") && err.message().contains("3 bytes"));
        let err = gather(
            "FEATURES",
            &[2],
            [host(&[0; 5]), host(&[0; 5])].into_iter(),
            &mut dest,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArg);
        assert!(err.message().contains("more than the 8 bytes"), "{err}");
    }

    #[test]
    fn device_memory_is_refused() {
        let gpu = Buffer {
            memory: MemoryType::Gpu,
            device: 1,
            size: 4,
            bytes: &[],
        };
        let mut dest = [0u8; 4];
        let err = gather("MODULE_ID", &[1], [Ok(gpu)].into_iter(), &mut dest).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Unsupported);
        assert!(err.message().contains("MODULE_ID") && err.message().contains("device 1"));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn buffers_split_anywhere_gather_to_the_same_bytes(
            data in prop::collection::vec(any::<u8>(), 0..256),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            points.extend([0, data.len()]);
            points.sort_unstable();
            let parts: Vec<&[u8]> = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
            let mut dest = vec![0u8; data.len()];
            gather("X", &[data.len() as i64], parts.iter().map(|p| host(p)), &mut dest).unwrap();
            prop_assert_eq!(dest, data);
        }

        #[test]
        fn buffers_that_do_not_fill_the_tensor_exactly_are_refused(
            sizes in prop::collection::vec(0usize..64, 0..6),
            want in 0usize..256,
            lie in any::<bool>(),
        ) {
            let buffers: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![7u8; n]).collect();
            let total: usize = sizes.iter().sum();
            let mut dest = vec![0u8; want];
            // A buffer that claims more bytes than it shows is refused too.
            let claimed = |i: usize, b: &Vec<u8>| b.len() + usize::from(lie && i == 0);
            let result = gather(
                "X",
                &[want as i64],
                buffers.iter().enumerate().map(|(i, b)| Ok(Buffer {
                    memory: MemoryType::Cpu,
                    device: 0,
                    size: claimed(i, b),
                    bytes: b,
                })),
                &mut dest,
            );
            let honest = !lie || buffers.is_empty();
            let fits = total == want && honest;
            prop_assert_eq!(result.is_ok(), fits);
            if let Err(e) = result {
                prop_assert_eq!(e.code(), crate::ErrorCode::InvalidArg);
                prop_assert!(e.message().contains("'X'"));
            }
        }
    }
}
