//! The `Backend` trait and the generic bodies of Triton's entry points. A backend implements
//! the trait and calls [`declare_backend!`](crate::declare_backend), which emits the
//! `extern "C"` functions; these only catch panics, convert errors and forward here.
use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use triton_sys as sys;

use crate::error::{check, Error, ErrorCode, Result};
use crate::model::{check_api_version, server_api_version, BackendHandle, Model, ModelInstance};
use crate::request::Request;
use crate::response::Response;
use crate::stats::{now_ns, report_batch, report_request, RequestTimer, Timestamps};

/// A Triton backend in ordinary Rust. Triton creates one model state per loaded model (shared
/// by its instances, so `Sync`) and one instance state per model instance (used by one thread
/// at a time, so only `Send`).
pub trait Backend: 'static {
    type ModelState: Send + Sync + 'static;
    type InstanceState: Send + 'static;

    /// Once, when Triton loads the library, after the API version check.
    fn initialize(_backend: &BackendHandle) -> Result<()> {
        Ok(())
    }

    /// Read and validate the model configuration; fail to refuse the model.
    fn model_initialize(model: &Model) -> Result<Self::ModelState>;

    /// Prepare one instance (load networks on its device); fail to refuse the instance.
    fn instance_initialize(
        model: &Self::ModelState,
        instance: &ModelInstance,
    ) -> Result<Self::InstanceState>;

    /// Answer one request. Each request of an execute call comes here on its own with its own
    /// response; an error becomes that request's error response and touches no other request.
    /// Mark `timer.compute_start()` once the inputs are read and `timer.compute_end()` once
    /// the results are ready, for the statistics.
    fn execute(
        model: &Self::ModelState,
        instance: &mut Self::InstanceState,
        request: &Request,
        response: &mut Response,
        timer: &mut RequestTimer,
    ) -> Result<()>;
}

/// What we store with `TRITONBACKEND_ModelInstanceSetState`: the user's state behind a lock
/// (Triton runs one execute per instance at a time; the lock makes that a guarantee) and the
/// instance name for messages.
struct InstanceSlot<S> {
    name: String,
    state: Mutex<S>,
}

/// Set when the process exits while model instances may still be running: tritonserver calls
/// `exit()` once its exit timeout expires, and the instance threads go on taking requests while
/// the static objects of the libraries (libtorch's operator registry among them) are destroyed.
/// From then on requests are refused cleanly instead of running the networks. The handler is
/// registered with `atexit` at backend initialisation, so it runs before the destructors of the
/// libraries loaded before that (libtorch included).
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Requests inside the backend's `execute` right now.
static COMPUTING: AtomicUsize = AtomicUsize::new(0);

/// How long the exit handler lets requests that are computing finish before the libraries
/// are torn down under them.
pub const EXIT_WAIT: Duration = Duration::from_secs(10);

extern "C" fn on_process_exit() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    wait_for_computing(EXIT_WAIT);
}

/// Wait until no request is computing, at most `limit`; whether none is.
fn wait_for_computing(limit: Duration) -> bool {
    let start = Instant::now();
    while COMPUTING.load(Ordering::SeqCst) > 0 {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Whether the process is exiting (see [`SHUTTING_DOWN`]).
pub fn is_shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Counts a request as computing while alive. Entered before the exit flag is read: with
/// both sides sequentially consistent, either the request sees the flag or the exit handler
/// sees the request.
struct Computing;

impl Computing {
    fn enter() -> Self {
        COMPUTING.fetch_add(1, Ordering::SeqCst);
        Computing
    }
}

impl Drop for Computing {
    fn drop(&mut self) {
        COMPUTING.fetch_sub(1, Ordering::SeqCst);
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Run `f`, turning a panic into an internal error that names `what`.
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(Error::internal(format!(
            "{what} panicked: {}",
            panic_message(payload.as_ref())
        )))
    })
}

/// The common shape of the simple entry points: catch panics, hand errors to Triton.
fn entry(what: &str, f: impl FnOnce() -> Result<()>) -> *mut sys::TRITONSERVER_Error {
    match catch_panic(what, f) {
        Ok(()) => ptr::null_mut(),
        Err(e) => {
            crate::log_error!("{what}: {e}");
            e.into_raw()
        }
    }
}

/// # Safety
/// Called by Triton with a live backend.
pub unsafe fn initialize<B: Backend>(
    backend: *mut sys::TRITONBACKEND_Backend,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_Initialize", || {
        let handle = BackendHandle::from_raw(backend);
        let server = server_api_version()?;
        check_api_version(server)?;
        // Also at a reload of the library after an unload (`dlclose` runs the handler).
        SHUTTING_DOWN.store(false, Ordering::SeqCst);
        if libc::atexit(on_process_exit) != 0 {
            crate::log_warn!(
                "cannot register the exit handler; requests at exit may fail uncleanly"
            );
        }
        crate::log_info!(
            "backend '{}': Triton backend API {}.{}, built against {}.{}",
            handle.name().unwrap_or_default(),
            server.0,
            server.1,
            crate::model::API_VERSION.0,
            crate::model::API_VERSION.1
        );
        B::initialize(&handle)
    })
}

/// # Safety
/// Called by Triton with a live model.
pub unsafe fn model_initialize<B: Backend>(
    model: *mut sys::TRITONBACKEND_Model,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInitialize", || {
        let view = Model::from_raw(model);
        let state = B::model_initialize(&view)?;
        let boxed = Box::into_raw(Box::new(state));
        let set = check(
            sys::TRITONBACKEND_ModelSetState(model, boxed.cast::<c_void>()),
            "TRITONBACKEND_ModelSetState",
        );
        if set.is_err() {
            drop(Box::from_raw(boxed));
        }
        set
    })
}

/// # Safety
/// Called by Triton with a live model whose state was set by [`model_initialize`].
pub unsafe fn model_finalize<B: Backend>(
    model: *mut sys::TRITONBACKEND_Model,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelFinalize", || {
        let mut state = ptr::null_mut();
        check(
            sys::TRITONBACKEND_ModelState(model, &mut state),
            "TRITONBACKEND_ModelState",
        )?;
        if !state.is_null() {
            drop(Box::from_raw(state.cast::<B::ModelState>()));
            check(
                sys::TRITONBACKEND_ModelSetState(model, ptr::null_mut()),
                "TRITONBACKEND_ModelSetState",
            )?;
        }
        Ok(())
    })
}

/// The model state of the model an instance belongs to.
///
/// # Safety
/// The model's state was set by [`model_initialize`] for backend `B` and outlives `'a`.
unsafe fn model_state<'a, B: Backend>(instance: &ModelInstance) -> Result<&'a B::ModelState> {
    let model = instance.model()?;
    let mut state = ptr::null_mut();
    check(
        sys::TRITONBACKEND_ModelState(model.raw(), &mut state),
        "TRITONBACKEND_ModelState",
    )?;
    if state.is_null() {
        return Err(Error::internal("the model has no model state"));
    }
    Ok(&*state.cast::<B::ModelState>())
}

/// # Safety
/// Called by Triton with a live instance of a model initialised by [`model_initialize`].
pub unsafe fn instance_initialize<B: Backend>(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInstanceInitialize", || {
        let view = ModelInstance::from_raw(instance);
        let name = view.name()?;
        let model = model_state::<B>(&view)?;
        let state = B::instance_initialize(model, &view)
            .map_err(|e| e.context(format!("model instance '{name}'")))?;
        let slot = Box::into_raw(Box::new(InstanceSlot {
            name,
            state: Mutex::new(state),
        }));
        let set = check(
            sys::TRITONBACKEND_ModelInstanceSetState(instance, slot.cast::<c_void>()),
            "TRITONBACKEND_ModelInstanceSetState",
        );
        if set.is_err() {
            drop(Box::from_raw(slot));
        }
        set
    })
}

/// # Safety
/// Called by Triton with a live instance whose state was set by [`instance_initialize`].
pub unsafe fn instance_finalize<B: Backend>(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInstanceFinalize", || {
        let mut slot = ptr::null_mut();
        check(
            sys::TRITONBACKEND_ModelInstanceState(instance, &mut slot),
            "TRITONBACKEND_ModelInstanceState",
        )?;
        if !slot.is_null() {
            drop(Box::from_raw(slot.cast::<InstanceSlot<B::InstanceState>>()));
            check(
                sys::TRITONBACKEND_ModelInstanceSetState(instance, ptr::null_mut()),
                "TRITONBACKEND_ModelInstanceSetState",
            )?;
        }
        Ok(())
    })
}

/// Execute: every request gets its own response (outputs or an error), its own statistics,
/// and is released exactly once. Always returns success to Triton, because from the first
/// moment the requests are ours (an error return would make Triton answer them a second time).
///
/// # Safety
/// Called by Triton with a live instance and `count` live requests that it hands over.
pub unsafe fn execute<B: Backend>(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    requests: *mut *mut sys::TRITONBACKEND_Request,
    count: u32,
) -> *mut sys::TRITONSERVER_Error {
    let exec_start = now_ns();
    // Own every request first: from here on each one is released by its drop, panics included.
    let owned: Vec<Request> = if requests.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(requests, count as usize)
            .iter()
            .map(|&raw| Request::from_raw(raw))
            .collect()
    };
    let view = ModelInstance::from_raw(instance);
    let outcome = catch_panic("TRITONBACKEND_ModelInstanceExecute", || {
        execute_owned::<B>(&view, owned, exec_start, false);
        Ok(())
    });
    if let Err(e) = outcome {
        crate::log_error!("{e}");
    }
    ptr::null_mut()
}

/// `shutting_down` refuses every request as the exit flag does (for tests).
fn execute_owned<B: Backend>(
    instance: &ModelInstance,
    requests: Vec<Request>,
    exec_start: u64,
    shutting_down: bool,
) {
    // SAFETY: the states were set by our initialisers and live until the finalisers run,
    // which Triton never does during an execute.
    let states = unsafe {
        model_state::<B>(instance).and_then(|model| {
            let mut slot = ptr::null_mut();
            check(
                sys::TRITONBACKEND_ModelInstanceState(instance.raw(), &mut slot),
                "TRITONBACKEND_ModelInstanceState",
            )?;
            if slot.is_null() {
                return Err(Error::internal("the model instance has no instance state"));
            }
            Ok((model, &*slot.cast::<InstanceSlot<B::InstanceState>>()))
        })
    };
    let count = requests.len();
    let mut batch = BatchStats::new(exec_start);
    let (model, slot) = match states {
        Ok(states) => states,
        Err(e) => {
            for (index, request) in requests.into_iter().enumerate() {
                let timer = RequestTimer::starting_at(exec_start);
                let last = index + 1 == count;
                finish_request(
                    instance,
                    request,
                    None,
                    Err(e.clone()),
                    timer,
                    &mut batch,
                    last,
                );
            }
            return;
        }
    };
    // A panic is caught inside the lock, so the lock is never poisoned; recover anyway.
    let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
    crate::log_verbose!(
        "model instance '{}': execute with {count} request(s)",
        slot.name
    );
    for (index, request) in requests.into_iter().enumerate() {
        let last = index + 1 == count;
        // Each request on its own: a panic anywhere in its handling leaves the others alone.
        let outcome = catch_panic(
            &format!("model instance '{}' request handling", slot.name),
            || {
                let mut timer = RequestTimer::start();
                let (response, result) = answer::<B>(
                    &slot.name,
                    model,
                    &mut state,
                    &request,
                    &mut timer,
                    shutting_down,
                );
                finish_request(instance, request, response, result, timer, &mut batch, last);
                Ok(())
            },
        );
        if let Err(e) = outcome {
            crate::log_error!("{e}");
        }
    }
}

/// Create the response and run the backend on one request; a panic in the backend becomes the
/// request's error. `None` when no response could be created.
fn answer<B: Backend>(
    name: &str,
    model: &B::ModelState,
    state: &mut B::InstanceState,
    request: &Request,
    timer: &mut RequestTimer,
    shutting_down: bool,
) -> (Option<Response>, Result<()>) {
    let mut response = match Response::new(request) {
        Ok(response) => response,
        Err(e) => return (None, Err(e)),
    };
    let _computing = Computing::enter();
    let result = if shutting_down || is_shutting_down() {
        Err(Error::unavailable(format!(
            "{} refused: the server is shutting down",
            request.describe()
        )))
    } else if request.is_cancelled() {
        Err(Error::new(
            ErrorCode::Cancelled,
            format!("{} was cancelled", request.describe()),
        ))
    } else {
        catch_panic(&format!("model instance '{name}'"), || {
            B::execute(model, state, request, &mut response, timer)
        })
    };
    (Some(response), result)
}

/// The execution as a whole: from the execute call to the last request's end, over the
/// requests that computed.
struct BatchStats {
    exec_start: u64,
    size: u64,
    compute_start: u64,
    compute_end: u64,
    exec_end: u64,
}

impl BatchStats {
    fn new(exec_start: u64) -> Self {
        Self {
            exec_start,
            size: 0,
            compute_start: 0,
            compute_end: 0,
            exec_end: 0,
        }
    }

    fn add(&mut self, t: &Timestamps) {
        if self.size == 0 {
            self.compute_start = t.compute_start;
        }
        self.size += 1;
        self.compute_end = t.compute_end;
        self.exec_end = t.exec_end;
    }

    fn report(&self, instance: &ModelInstance) {
        if self.size == 0 {
            return;
        }
        let t = Timestamps {
            exec_start: self.exec_start,
            compute_start: self.compute_start,
            compute_end: self.compute_end,
            exec_end: self.exec_end,
        };
        if let Err(e) = report_batch(instance, self.size, &t) {
            crate::log_error!("{e}");
        }
    }
}

/// Report the request's statistics (and, after the last request, the execution's), then send
/// its response (outputs, or the error) and release it. Statistics go first so that a client
/// that has its answer also sees it counted.
fn finish_request(
    instance: &ModelInstance,
    request: Request,
    response: Option<Response>,
    result: Result<()>,
    timer: RequestTimer,
    batch: &mut BatchStats,
    last: bool,
) {
    let id = request.id();
    let error = result.err().map(|e| match id.is_empty() {
        true => e,
        false => e.context(format!("request '{id}'")),
    });
    if let Some(e) = &error {
        crate::log_verbose!("{e}");
    }
    let t = timer.finish_at(now_ns());
    if let Err(e) = report_request(instance, &request, error.is_none(), &t) {
        crate::log_error!("{e}");
    }
    if error.is_none() {
        batch.add(&t);
    }
    if last {
        batch.report(instance);
    }
    // A response lost to a failure gets a second chance, so that the client hears the error.
    match response.or_else(|| Response::new(&request).ok()) {
        Some(response) => {
            if let Err(e) = response.send(error.as_ref()) {
                crate::log_error!("cannot send the response to {}: {e}", request.describe());
            }
        }
        None => crate::log_error!(
            "no response could be created for {}: {}",
            request.describe(),
            error.as_ref().map_or("", |e| e.message())
        ),
    }
    drop(request);
}

/// Emit the `extern "C"` entry points of a backend library for a type implementing
/// [`Backend`]: `TRITONBACKEND_Initialize`, `TRITONBACKEND_ModelInitialize/Finalize`,
/// `TRITONBACKEND_ModelInstanceInitialize/Finalize` and `TRITONBACKEND_ModelInstanceExecute`.
/// Each catches panics and turns errors into `TRITONSERVER_Error*`.
#[macro_export]
macro_rules! declare_backend {
    ($backend:ty) => {
        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_Initialize(
            backend: *mut $crate::sys::TRITONBACKEND_Backend,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::initialize::<$backend>(backend)
        }

        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(
            model: *mut $crate::sys::TRITONBACKEND_Model,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::model_initialize::<$backend>(model)
        }

        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(
            model: *mut $crate::sys::TRITONBACKEND_Model,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::model_finalize::<$backend>(model)
        }

        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
            instance: *mut $crate::sys::TRITONBACKEND_ModelInstance,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::instance_initialize::<$backend>(instance)
        }

        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
            instance: *mut $crate::sys::TRITONBACKEND_ModelInstance,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::instance_finalize::<$backend>(instance)
        }

        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
            instance: *mut $crate::sys::TRITONBACKEND_ModelInstance,
            requests: *mut *mut $crate::sys::TRITONBACKEND_Request,
            request_count: u32,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::execute::<$backend>(instance, requests, request_count)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_triton::{
        live_errors, take_events, Event, FakeInput, FakeInstance, FakeModel, FakeRequest,
    };
    use std::ffi::CString;

    #[test]
    fn panics_become_internal_errors_naming_the_entry_point() {
        let err = catch_panic("TRITONBACKEND_ModelInitialize", || -> Result<()> {
            panic!("boom {}", 7)
        })
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(err.message().contains("TRITONBACKEND_ModelInitialize"));
        assert!(err.message().contains("boom 7"));
        let err = catch_panic("x", || -> Result<()> { std::panic::panic_any(5u8) }).unwrap_err();
        assert!(err.message().contains("unknown panic payload"));
    }

    #[test]
    fn errors_pass_through_unchanged() {
        let err = catch_panic("x", || -> Result<()> { Err(Error::invalid_arg("bad")) });
        assert_eq!(err.unwrap_err(), Error::invalid_arg("bad"));
    }

    /// Sums input X; request ids steer failures.
    struct Adder;

    impl Backend for Adder {
        type ModelState = f32;
        type InstanceState = u32;

        fn model_initialize(_model: &Model) -> Result<f32> {
            Ok(100.0)
        }

        fn instance_initialize(_model: &f32, instance: &ModelInstance) -> Result<u32> {
            if instance.name()? == "panicky" {
                panic!("cannot place instance");
            }
            Ok(0)
        }

        fn execute(
            offset: &f32,
            executed: &mut u32,
            request: &Request,
            response: &mut Response,
            timer: &mut RequestTimer,
        ) -> Result<()> {
            *executed += 1;
            // The id steers the behaviour: its part before '-'.
            let id = request.id();
            let kind = id.split('-').next().unwrap_or_default();
            match kind {
                "bad" => return Err(Error::invalid_arg("input 'X' is bad")),
                "panic" => panic!("boom in execute"),
                _ => {}
            }
            request.requested_outputs()?;
            let input = request
                .input("X")?
                .ok_or_else(|| Error::invalid_arg("input 'X' is missing"))?;
            let x: Vec<f32> = input.to_vec()?;
            timer.compute_start();
            let sum = offset + x.iter().sum::<f32>();
            timer.compute_end();
            match kind {
                "shape" => response.output("SUM", &[2], &[sum]),
                "outbad" => {
                    response.output("SUM", &[1], &[sum])?;
                    Err(Error::internal("failed after writing SUM"))
                }
                "outpanic" => {
                    response.output("SUM", &[1], &[sum])?;
                    panic!("boom after writing SUM")
                }
                _ => response.output("SUM", &[1], &[sum]),
            }
        }
    }

    /// A fake model with an initialised model state and instance `name`.
    fn setup(
        name: &str,
    ) -> (
        Box<FakeModel>,
        Box<FakeInstance>,
        *mut sys::TRITONSERVER_Error,
    ) {
        let mut model = Box::new(FakeModel {
            state: ptr::null_mut(),
        });
        let model_ptr: *mut FakeModel = &mut *model;
        assert!(unsafe { model_initialize::<Adder>(model_ptr.cast()) }.is_null());
        let mut instance = Box::new(FakeInstance {
            name: CString::new(name).unwrap(),
            model: model_ptr,
            state: ptr::null_mut(),
        });
        let err =
            unsafe { instance_initialize::<Adder>((&mut *instance as *mut FakeInstance).cast()) };
        (model, instance, err)
    }

    fn teardown(model: &mut FakeModel, instance: &mut FakeInstance) {
        unsafe {
            assert!(instance_finalize::<Adder>((instance as *mut FakeInstance).cast()).is_null());
            assert!(model_finalize::<Adder>((model as *mut FakeModel).cast()).is_null());
        }
        assert!(instance.state.is_null() && model.state.is_null());
    }

    fn sum_of(outputs: &[(String, Vec<i64>, Vec<u8>)]) -> f32 {
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            (outputs[0].0.as_str(), outputs[0].1.as_slice()),
            ("SUM", &[1][..])
        );
        f32::from_ne_bytes(outputs[0].2[..4].try_into().unwrap())
    }

    #[test]
    fn every_request_gets_its_own_response_stats_and_one_release() {
        let _flag = EXIT_FLAG.lock().unwrap_or_else(|p| p.into_inner());
        let (mut model, mut instance, err) = setup("adder_0");
        assert!(err.is_null());
        take_events();
        let mut cancelled = FakeRequest::new("cancelled", vec![]);
        cancelled.cancelled = true;
        let mut short = FakeRequest::new("short", vec![FakeInput::fp32("X", &[4], &[&[1.0]])]);
        short.inputs[0].byte_size = 16;
        let mut requests = [
            FakeRequest::new(
                "a",
                vec![FakeInput::fp32("X", &[3], &[&[1.0, 2.0], &[3.0]])],
            ),
            FakeRequest::new("bad", vec![]),
            FakeRequest::new("panic", vec![]),
            cancelled,
            short,
            FakeRequest::new("b", vec![FakeInput::fp32("X", &[1], &[&[], &[10.0]])]),
        ];
        let mut raw: Vec<*mut sys::TRITONBACKEND_Request> = requests
            .iter_mut()
            .map(|r| (r as *mut FakeRequest).cast())
            .collect();
        let status = unsafe {
            execute::<Adder>(
                (&mut *instance as *mut FakeInstance).cast(),
                raw.as_mut_ptr(),
                raw.len() as u32,
            )
        };
        assert!(
            status.is_null(),
            "execute must not hand requests back to Triton"
        );
        let events = take_events();

        let ids = ["a", "bad", "panic", "cancelled", "short", "b"];
        for id in ids {
            let released = events
                .iter()
                .filter(|e| matches!(e, Event::Released { request } if request == id))
                .count();
            assert_eq!(released, 1, "request {id} released {released} times");
            let sent: Vec<_> = events
                .iter()
                .filter(|e| matches!(e, Event::Sent { request, .. } if request == id))
                .collect();
            assert_eq!(sent.len(), 1, "request {id}");
        }
        assert!(!events.iter().any(|e| matches!(e, Event::Deleted { .. })));
        let outcome = |id: &str| {
            events.iter().find_map(|e| match e {
                Event::Sent {
                    request,
                    error,
                    outputs,
                } if request == id => Some((error.clone(), outputs.clone())),
                _ => None,
            })
        };
        assert_eq!(sum_of(&outcome("a").unwrap().1), 106.0);
        assert_eq!(sum_of(&outcome("b").unwrap().1), 110.0);
        let bad = outcome("bad").unwrap().0.unwrap();
        assert_eq!(bad, "request 'bad': input 'X' is bad");
        let panic = outcome("panic").unwrap().0.unwrap();
        assert!(
            panic.contains("panicked") && panic.contains("boom in execute"),
            "{panic}"
        );
        assert!(outcome("cancelled")
            .unwrap()
            .0
            .unwrap()
            .contains("cancelled"));
        let short = outcome("short").unwrap().0.unwrap();
        assert!(
            short.contains("'X'") && short.contains("4 bytes"),
            "{short}"
        );

        // Statistics: one per request, before its response (a client that has its answer
        // sees it counted) and its release; success only for a and b; one batch of the two
        // that computed, reported before the last response.
        let position = |id: &str, kind: &str| {
            events
                .iter()
                .position(|e| match e {
                    Event::Stats { request, .. } => kind == "stats" && request == id,
                    Event::Sent { request, .. } => kind == "sent" && request == id,
                    Event::Released { request } => kind == "released" && request == id,
                    _ => false,
                })
                .unwrap()
        };
        for id in ids {
            assert!(position(id, "stats") < position(id, "sent"), "{id}");
            assert!(position(id, "sent") < position(id, "released"), "{id}");
        }
        let batch_at = events.iter().position(|e| matches!(e, Event::Batch { .. }));
        assert!(batch_at.unwrap() < position("b", "sent"));
        assert!(batch_at.unwrap() > position("a", "sent"));
        let successes: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Stats {
                    request,
                    success: true,
                    times,
                } => {
                    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
                    Some(request.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(successes, ["a", "b"]);
        let batches: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Batch { size, times } => Some((*size, *times)),
                _ => None,
            })
            .collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].0, 2);
        assert!(batches[0].1.windows(2).all(|w| w[0] <= w[1]));

        // The instance state saw every request that reached execute (not the cancelled one).
        let slot = unsafe { &*instance.state.cast::<InstanceSlot<u32>>() };
        assert_eq!(*slot.state.lock().unwrap(), 5);
        teardown(&mut model, &mut instance);
    }

    #[test]
    fn a_panicking_initialiser_becomes_an_error_and_sets_no_state() {
        let (mut model, mut instance, err) = setup("panicky");
        assert!(!err.is_null());
        let error = unsafe { Error::from_raw(err) }.unwrap();
        assert_eq!(error.code(), ErrorCode::Internal);
        assert!(error.message().contains("cannot place instance"), "{error}");
        assert!(instance.state.is_null());
        teardown(&mut model, &mut instance);
    }

    /// Every way a request can fail in the safe layer or the backend, by the id's kind.
    const KINDS: [&str; 16] = [
        "ok",
        "bad",
        "panic",
        "outpanic",
        "outbad",
        "shape",
        "cancelled",
        "short",
        "gpu",
        "noinput",
        "nofactory",
        "noresponse",
        "nooutput",
        "nobuffer",
        "nocount",
        "nosend",
    ];

    /// A request of `kind` with input X = [i, 1] (sum i + 101 when it succeeds).
    fn request_of(kind: &str, i: usize) -> FakeRequest {
        let values = [i as f32, 1.0];
        let mut input = FakeInput::fp32("X", &[2], &[&values[..1], &values[1..]]);
        match kind {
            "short" => input.byte_size = 4,
            "gpu" => input.memory = sys::TRITONSERVER_MEMORY_GPU,
            _ => {}
        }
        let inputs = if kind == "noinput" {
            vec![]
        } else {
            vec![input]
        };
        let mut request = FakeRequest::new(&format!("{kind}-{i}"), inputs);
        request.cancelled = kind == "cancelled";
        request.failing = match kind {
            "nofactory" => vec!["ResponseNew"],
            "noresponse" => vec!["ResponseNew", "ResponseNew"],
            "nooutput" => vec!["ResponseOutput"],
            "nobuffer" => vec!["OutputBuffer"],
            "nocount" => vec!["OutputCount"],
            "nosend" => vec!["ResponseSend"],
            _ => vec![],
        };
        request
    }

    /// The test backend's deliberate panics are expected; keep them out of the test output.
    fn quiet_expected_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let expected = info
                    .payload()
                    .downcast_ref::<&str>()
                    .is_some_and(|m| m.starts_with("boom"));
                if !expected {
                    default(info);
                }
            }));
        });
    }

    /// Run one execute call over requests of the given kinds and check that no handle leaks:
    /// each request released once and counted once; each response created is sent (never
    /// dropped unsent), one per request that could get one; every error object deleted; the
    /// good requests answered right.
    fn check_no_leaks(kinds: &[&str], shutting_down: bool) {
        quiet_expected_panics();
        let _flag = EXIT_FLAG.lock().unwrap_or_else(|p| p.into_inner());
        let (mut model, mut instance, err) = setup("leaks_0");
        assert!(err.is_null());
        take_events();
        let errors_before = live_errors();
        let mut requests: Vec<FakeRequest> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| request_of(k, i))
            .collect();
        let ids: Vec<String> = requests
            .iter()
            .map(|r| r.id.to_string_lossy().into_owned())
            .collect();
        let raw: Vec<*mut sys::TRITONBACKEND_Request> = requests
            .iter_mut()
            .map(|r| (r as *mut FakeRequest).cast())
            .collect();
        let instance_ptr: *mut FakeInstance = &mut *instance;
        // SAFETY: fake handles that outlive the call.
        unsafe {
            let owned = raw.iter().map(|&r| Request::from_raw(r)).collect();
            let view = ModelInstance::from_raw(instance_ptr.cast());
            execute_owned::<Adder>(&view, owned, now_ns(), shutting_down);
        }
        let events = take_events();
        assert_eq!(live_errors(), errors_before, "error objects leaked");
        let count = |id: &str, pred: fn(&Event) -> Option<&String>| {
            events
                .iter()
                .filter(|e| pred(e) == Some(&id.to_string()))
                .count()
        };
        for (id, kind) in ids.iter().zip(kinds) {
            let created = count(id, |e| match e {
                Event::Created { request } => Some(request),
                _ => None,
            });
            let sent = count(id, |e| match e {
                Event::Sent { request, .. } => Some(request),
                _ => None,
            });
            let deleted = count(id, |e| match e {
                Event::Deleted { request } => Some(request),
                _ => None,
            });
            let released = count(id, |e| match e {
                Event::Released { request } => Some(request),
                _ => None,
            });
            let stats = count(id, |e| match e {
                Event::Stats { request, .. } => Some(request),
                _ => None,
            });
            assert_eq!((released, stats), (1, 1), "{id}: released, stats");
            assert_eq!(created, sent + deleted, "{id}: a response was lost");
            assert_eq!(deleted, 0, "{id}: a response was dropped unsent");
            let want_sent = usize::from(*kind != "noresponse");
            assert_eq!(sent, want_sent, "{id}: responses sent");
            let outcome = events.iter().find_map(|e| match e {
                Event::Sent {
                    request,
                    error,
                    outputs,
                } if request == id => Some((error.clone(), outputs.clone())),
                _ => None,
            });
            let success = events
                .iter()
                .any(|e| matches!(e, Event::Stats { request, success: true, .. } if request == id));
            let good = matches!(*kind, "ok" | "nosend") && !shutting_down;
            assert_eq!(success, good, "{id}: success in the statistics");
            match outcome {
                Some((None, outputs)) => {
                    assert!(good, "{id} succeeded");
                    let i: f32 = id.split('-').nth(1).unwrap().parse().unwrap();
                    assert_eq!(sum_of(&outputs), 101.0 + i, "{id}");
                }
                Some((Some(message), _)) => {
                    assert!(!good, "{id} failed: {message}");
                    if shutting_down && !matches!(*kind, "nofactory") {
                        assert!(message.contains("shutting down"), "{id}: {message}");
                    }
                }
                None => assert_eq!(*kind, "noresponse"),
            }
        }
        teardown(&mut model, &mut instance);
    }

    #[test]
    fn no_handle_leaks_on_any_error_path() {
        check_no_leaks(&KINDS, false);
        // Each kind alone too: the first and the last request of an execute call differ
        // (the execution's statistics go with the last).
        for kind in KINDS {
            check_no_leaks(&[kind], false);
        }
    }

    /// Held by the tests that set or depend on the process-wide exit flag.
    static EXIT_FLAG: Mutex<()> = Mutex::new(());

    #[test]
    fn at_exit_requests_are_refused_cleanly() {
        check_no_leaks(&KINDS, true);
        let _flag = EXIT_FLAG.lock().unwrap_or_else(|p| p.into_inner());
        // The exit handler waits for a request that is computing, within its limit.
        let computing = Computing::enter();
        let finishing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(computing);
        });
        let start = Instant::now();
        on_process_exit();
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(start.elapsed() < EXIT_WAIT);
        finishing.join().unwrap();
        assert!(is_shutting_down());
        let stuck = Computing::enter();
        assert!(!wait_for_computing(Duration::from_millis(20)));
        drop(stuck);
        assert!(wait_for_computing(Duration::ZERO));
        // Reset for the rest of the process, as a new backend initialisation does.
        SHUTTING_DOWN.store(false, Ordering::SeqCst);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn any_mix_of_failures_leaks_nothing(
            picks in proptest::collection::vec(0..KINDS.len(), 1..12)
        ) {
            let kinds: Vec<&str> = picks.iter().map(|&k| KINDS[k]).collect();
            check_no_leaks(&kinds, false);
        }
    }
}
