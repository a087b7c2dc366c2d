//! Raw bindings to Triton's C API (`tritonserver.h`, `tritonbackend.h`), generated at build
//! time. The symbols are left undefined in our cdylib: tritonserver provides them when it loads
//! the backend. Use the safe `triton` crate instead of this one.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
