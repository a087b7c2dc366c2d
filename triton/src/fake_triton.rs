//! A fake of the part of Triton's C API that the entry points and the execute loop use, so
//! that unit tests can drive them with several requests and see every response, release and
//! statistics call. The functions are the real C symbols; the test binary defines them.
//! Events are recorded per thread, so tests running in parallel do not mix.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use triton_sys as sys;

pub struct FakeError {
    code: sys::TRITONSERVER_Error_Code,
    message: CString,
}

pub struct FakeInput {
    pub name: CString,
    pub dtype: sys::TRITONSERVER_DataType,
    pub shape: Vec<i64>,
    /// Reported byte size (normally the sum of the buffers).
    pub byte_size: u64,
    pub buffers: Vec<Vec<u8>>,
    pub memory: sys::TRITONSERVER_MemoryType,
}

impl FakeInput {
    /// An FP32 input split into the given buffers.
    pub fn fp32(name: &str, shape: &[i64], parts: &[&[f32]]) -> Self {
        let buffers: Vec<Vec<u8>> = parts
            .iter()
            .map(|p| p.iter().flat_map(|v| v.to_ne_bytes()).collect())
            .collect();
        Self {
            name: CString::new(name).unwrap(),
            dtype: sys::TRITONSERVER_TYPE_FP32,
            shape: shape.to_vec(),
            byte_size: buffers.iter().map(|b| b.len() as u64).sum(),
            buffers,
            memory: sys::TRITONSERVER_MEMORY_CPU,
        }
    }
}

pub struct FakeRequest {
    pub id: CString,
    pub inputs: Vec<FakeInput>,
    pub outputs: Vec<CString>,
    pub cancelled: bool,
    /// Calls that fail for this request (`"ResponseNew"`, `"ResponseOutput"`,
    /// `"OutputBuffer"`, `"OutputCount"`, `"ResponseSend"`); `"ResponseNew"` fails once.
    pub failing: Vec<&'static str>,
}

impl FakeRequest {
    pub fn new(id: &str, inputs: Vec<FakeInput>) -> Self {
        Self {
            id: CString::new(id).unwrap(),
            inputs,
            outputs: vec![CString::new("SUM").unwrap()],
            cancelled: false,
            failing: Vec::new(),
        }
    }
}

struct FakeOutput {
    fail_buffer: bool,
    name: String,
    shape: Vec<i64>,
    data: Vec<u8>,
}

struct FakeResponse {
    request: String,
    failing: Vec<&'static str>,
    // Boxed: the code under test holds pointers to outputs while more are added.
    #[allow(clippy::vec_box)]
    outputs: Vec<Box<FakeOutput>>,
}

pub struct FakeModel {
    pub state: *mut c_void,
}

pub struct FakeInstance {
    pub name: CString,
    pub model: *mut FakeModel,
    pub state: *mut c_void,
}

/// What the code under test did, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Created {
        request: String,
    },
    Sent {
        request: String,
        error: Option<String>,
        outputs: Vec<(String, Vec<i64>, Vec<u8>)>,
    },
    Deleted {
        request: String,
    },
    Released {
        request: String,
    },
    Stats {
        request: String,
        success: bool,
        times: [u64; 4],
    },
    Batch {
        size: u64,
        times: [u64; 4],
    },
}

thread_local! {
    static EVENTS: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
    /// Error objects created and not yet deleted, on this thread.
    static LIVE_ERRORS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Error objects alive on this thread: created by `TRITONSERVER_ErrorNew` and not deleted.
pub fn live_errors() -> i64 {
    LIVE_ERRORS.with(|n| n.get())
}

fn record(event: Event) {
    EVENTS.with(|e| e.borrow_mut().push(event));
}

/// The events recorded on this thread so far (cleared).
pub fn take_events() -> Vec<Event> {
    EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

unsafe fn request<'a>(raw: *mut sys::TRITONBACKEND_Request) -> &'a FakeRequest {
    &*raw.cast::<FakeRequest>()
}

unsafe fn request_id(raw: *mut sys::TRITONBACKEND_Request) -> String {
    request(raw).id.to_string_lossy().into_owned()
}

fn error(message: &str) -> *mut sys::TRITONSERVER_Error {
    let message = CString::new(message).unwrap();
    unsafe { TRITONSERVER_ErrorNew(sys::TRITONSERVER_ERROR_INVALID_ARG, message.as_ptr()) }
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorNew(
    code: sys::TRITONSERVER_Error_Code,
    msg: *const c_char,
) -> *mut sys::TRITONSERVER_Error {
    let message = CStr::from_ptr(msg).to_owned();
    LIVE_ERRORS.with(|n| n.set(n.get() + 1));
    Box::into_raw(Box::new(FakeError { code, message })).cast()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorDelete(error: *mut sys::TRITONSERVER_Error) {
    LIVE_ERRORS.with(|n| n.set(n.get() - 1));
    drop(Box::from_raw(error.cast::<FakeError>()));
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorCode(
    error: *mut sys::TRITONSERVER_Error,
) -> sys::TRITONSERVER_Error_Code {
    (*error.cast::<FakeError>()).code
}

#[no_mangle]
pub unsafe extern "C" fn TRITONSERVER_ErrorMessage(
    error: *mut sys::TRITONSERVER_Error,
) -> *const c_char {
    (*error.cast::<FakeError>()).message.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelState(
    model: *mut sys::TRITONBACKEND_Model,
    state: *mut *mut c_void,
) -> *mut sys::TRITONSERVER_Error {
    *state = (*model.cast::<FakeModel>()).state;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelSetState(
    model: *mut sys::TRITONBACKEND_Model,
    state: *mut c_void,
) -> *mut sys::TRITONSERVER_Error {
    (*model.cast::<FakeModel>()).state = state;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceName(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    name: *mut *const c_char,
) -> *mut sys::TRITONSERVER_Error {
    *name = (*instance.cast::<FakeInstance>()).name.as_ptr();
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceModel(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    model: *mut *mut sys::TRITONBACKEND_Model,
) -> *mut sys::TRITONSERVER_Error {
    *model = (*instance.cast::<FakeInstance>()).model.cast();
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceState(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    state: *mut *mut c_void,
) -> *mut sys::TRITONSERVER_Error {
    *state = (*instance.cast::<FakeInstance>()).state;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceSetState(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    state: *mut c_void,
) -> *mut sys::TRITONSERVER_Error {
    (*instance.cast::<FakeInstance>()).state = state;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestId(
    req: *mut sys::TRITONBACKEND_Request,
    id: *mut *const c_char,
) -> *mut sys::TRITONSERVER_Error {
    *id = request(req).id.as_ptr();
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestIsCancelled(
    req: *mut sys::TRITONBACKEND_Request,
    is_cancelled: *mut bool,
) -> *mut sys::TRITONSERVER_Error {
    *is_cancelled = request(req).cancelled;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestRelease(
    req: *mut sys::TRITONBACKEND_Request,
    _flags: u32,
) -> *mut sys::TRITONSERVER_Error {
    record(Event::Released {
        request: request_id(req),
    });
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestInputCount(
    req: *mut sys::TRITONBACKEND_Request,
    count: *mut u32,
) -> *mut sys::TRITONSERVER_Error {
    *count = request(req).inputs.len() as u32;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestInputName(
    req: *mut sys::TRITONBACKEND_Request,
    index: u32,
    name: *mut *const c_char,
) -> *mut sys::TRITONSERVER_Error {
    *name = request(req).inputs[index as usize].name.as_ptr();
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestInput(
    req: *mut sys::TRITONBACKEND_Request,
    name: *const c_char,
    input: *mut *mut sys::TRITONBACKEND_Input,
) -> *mut sys::TRITONSERVER_Error {
    let name = CStr::from_ptr(name);
    match request(req)
        .inputs
        .iter()
        .find(|i| i.name.as_c_str() == name)
    {
        Some(found) => {
            *input = (found as *const FakeInput).cast_mut().cast();
            ptr::null_mut()
        }
        None => error("no such input"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_InputProperties(
    input: *mut sys::TRITONBACKEND_Input,
    name: *mut *const c_char,
    datatype: *mut sys::TRITONSERVER_DataType,
    shape: *mut *const i64,
    dims_count: *mut u32,
    byte_size: *mut u64,
    buffer_count: *mut u32,
) -> *mut sys::TRITONSERVER_Error {
    let input = &*input.cast::<FakeInput>();
    *name = input.name.as_ptr();
    *datatype = input.dtype;
    *shape = input.shape.as_ptr();
    *dims_count = input.shape.len() as u32;
    *byte_size = input.byte_size;
    *buffer_count = input.buffers.len() as u32;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_InputBuffer(
    input: *mut sys::TRITONBACKEND_Input,
    index: u32,
    buffer: *mut *const c_void,
    buffer_byte_size: *mut u64,
    memory_type: *mut sys::TRITONSERVER_MemoryType,
    memory_type_id: *mut i64,
) -> *mut sys::TRITONSERVER_Error {
    let input = &*input.cast::<FakeInput>();
    let Some(data) = input.buffers.get(index as usize) else {
        return error("buffer index out of range");
    };
    *buffer = data.as_ptr().cast();
    *buffer_byte_size = data.len() as u64;
    *memory_type = input.memory;
    *memory_type_id = 0;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestOutputCount(
    req: *mut sys::TRITONBACKEND_Request,
    count: *mut u32,
) -> *mut sys::TRITONSERVER_Error {
    if request(req).failing.contains(&"OutputCount") {
        return error("output count unavailable");
    }
    *count = request(req).outputs.len() as u32;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_RequestOutputName(
    req: *mut sys::TRITONBACKEND_Request,
    index: u32,
    name: *mut *const c_char,
) -> *mut sys::TRITONSERVER_Error {
    *name = request(req).outputs[index as usize].as_ptr();
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ResponseNew(
    response: *mut *mut sys::TRITONBACKEND_Response,
    req: *mut sys::TRITONBACKEND_Request,
) -> *mut sys::TRITONSERVER_Error {
    let fake_request = &mut *req.cast::<FakeRequest>();
    if let Some(at) = fake_request
        .failing
        .iter()
        .position(|&c| c == "ResponseNew")
    {
        fake_request.failing.remove(at);
        return error("no response factory");
    }
    let fake = FakeResponse {
        request: request_id(req),
        failing: fake_request.failing.clone(),
        outputs: Vec::new(),
    };
    record(Event::Created {
        request: fake.request.clone(),
    });
    *response = Box::into_raw(Box::new(fake)).cast();
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ResponseDelete(
    response: *mut sys::TRITONBACKEND_Response,
) -> *mut sys::TRITONSERVER_Error {
    let fake = Box::from_raw(response.cast::<FakeResponse>());
    record(Event::Deleted {
        request: fake.request,
    });
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ResponseOutput(
    response: *mut sys::TRITONBACKEND_Response,
    output: *mut *mut sys::TRITONBACKEND_Output,
    name: *const c_char,
    _datatype: sys::TRITONSERVER_DataType,
    shape: *const i64,
    dims_count: u32,
) -> *mut sys::TRITONSERVER_Error {
    let fake = &mut *response.cast::<FakeResponse>();
    if fake.failing.contains(&"ResponseOutput") {
        return error("cannot add an output");
    }
    let mut out = Box::new(FakeOutput {
        fail_buffer: fake.failing.contains(&"OutputBuffer"),
        name: CStr::from_ptr(name).to_string_lossy().into_owned(),
        shape: std::slice::from_raw_parts(shape, dims_count as usize).to_vec(),
        data: Vec::new(),
    });
    *output = (&mut *out as *mut FakeOutput).cast();
    fake.outputs.push(out);
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_OutputBuffer(
    output: *mut sys::TRITONBACKEND_Output,
    buffer: *mut *mut c_void,
    buffer_byte_size: u64,
    memory_type: *mut sys::TRITONSERVER_MemoryType,
    memory_type_id: *mut i64,
) -> *mut sys::TRITONSERVER_Error {
    let out = &mut *output.cast::<FakeOutput>();
    if out.fail_buffer {
        return error("out of output memory");
    }
    out.data = vec![0; buffer_byte_size as usize];
    *buffer = out.data.as_mut_ptr().cast();
    *memory_type = sys::TRITONSERVER_MEMORY_CPU;
    *memory_type_id = 0;
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ResponseSend(
    response: *mut sys::TRITONBACKEND_Response,
    _flags: u32,
    err: *mut sys::TRITONSERVER_Error,
) -> *mut sys::TRITONSERVER_Error {
    let fake = Box::from_raw(response.cast::<FakeResponse>());
    // Triton takes the response even when sending fails; the error stays the caller's.
    let send_fails = fake.failing.contains(&"ResponseSend");
    let error = (!err.is_null()).then(|| {
        (*err.cast::<FakeError>())
            .message
            .to_string_lossy()
            .into_owned()
    });
    record(Event::Sent {
        request: fake.request,
        error,
        outputs: fake
            .outputs
            .into_iter()
            .map(|o| (o.name, o.shape, o.data))
            .collect(),
    });
    if send_fails {
        return self::error("connection closed");
    }
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceReportStatistics(
    _instance: *mut sys::TRITONBACKEND_ModelInstance,
    req: *mut sys::TRITONBACKEND_Request,
    success: bool,
    exec_start_ns: u64,
    compute_start_ns: u64,
    compute_end_ns: u64,
    exec_end_ns: u64,
) -> *mut sys::TRITONSERVER_Error {
    record(Event::Stats {
        request: request_id(req),
        success,
        times: [exec_start_ns, compute_start_ns, compute_end_ns, exec_end_ns],
    });
    ptr::null_mut()
}

#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceReportBatchStatistics(
    _instance: *mut sys::TRITONBACKEND_ModelInstance,
    batch_size: u64,
    exec_start_ns: u64,
    compute_start_ns: u64,
    compute_end_ns: u64,
    exec_end_ns: u64,
) -> *mut sys::TRITONSERVER_Error {
    record(Event::Batch {
        size: batch_size,
        times: [exec_start_ns, compute_start_ns, compute_end_ns, exec_end_ns],
    });
    ptr::null_mut()
}
