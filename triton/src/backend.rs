//! The `Backend` trait and the generic bodies of Triton's entry points. A backend implements
//! the trait and calls [`declare_backend!`](crate::declare_backend), which emits the
//! `extern "C"` functions; these only catch panics, convert errors and forward here.
use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Mutex;

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
        execute_owned::<B>(&view, owned, exec_start);
        Ok(())
    });
    if let Err(e) = outcome {
        crate::log_error!("{e}");
    }
    ptr::null_mut()
}

fn execute_owned<B: Backend>(instance: &ModelInstance, requests: Vec<Request>, exec_start: u64) {
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
        let mut timer = RequestTimer::start();
        let response = Response::new(&request);
        let result = match &response {
            Err(e) => Err(e.clone()),
            Ok(_) if request.is_cancelled() => Err(Error::new(
                ErrorCode::Cancelled,
                format!("{} was cancelled", request.describe()),
            )),
            Ok(_) => Ok(()),
        };
        let (response, result) = match (response, result) {
            (Ok(mut response), Ok(())) => {
                let result = catch_panic(&format!("model instance '{}'", slot.name), || {
                    B::execute(model, &mut state, &request, &mut response, &mut timer)
                });
                (Some(response), result)
            }
            (response, result) => (response.ok(), result),
        };
        let last = index + 1 == count;
        finish_request(instance, request, response, result, timer, &mut batch, last);
    }
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
    match response {
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
    use crate::fake_triton::{take_events, Event, FakeInput, FakeInstance, FakeModel, FakeRequest};
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
            match request.id().as_str() {
                "bad" => return Err(Error::invalid_arg("input 'X' is bad")),
                "panic" => panic!("boom in execute"),
                _ => {}
            }
            let input = request
                .input("X")?
                .ok_or_else(|| Error::invalid_arg("input 'X' is missing"))?;
            let x: Vec<f32> = input.to_vec()?;
            timer.compute_start();
            let sum = offset + x.iter().sum::<f32>();
            timer.compute_end();
            response.output("SUM", &[1], &[sum])
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
}
