//! Logging through the server's log (`TRITONSERVER_LogMessage`), so that tritonserver's
//! `--log-verbose` / `--log-info` flags govern the backend's messages too.
use triton_sys as sys;

use crate::error::c_string_lossy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
    Verbose,
}

impl LogLevel {
    fn to_raw(self) -> sys::TRITONSERVER_LogLevel {
        match self {
            LogLevel::Info => sys::TRITONSERVER_LOG_INFO,
            LogLevel::Warn => sys::TRITONSERVER_LOG_WARN,
            LogLevel::Error => sys::TRITONSERVER_LOG_ERROR,
            LogLevel::Verbose => sys::TRITONSERVER_LOG_VERBOSE,
        }
    }
}

type IsEnabledFn = unsafe extern "C" fn(sys::TRITONSERVER_LogLevel) -> bool;
type LogMessageFn = unsafe extern "C" fn(
    sys::TRITONSERVER_LogLevel,
    *const std::os::raw::c_char,
    std::os::raw::c_int,
    *const std::os::raw::c_char,
) -> *mut sys::TRITONSERVER_Error;
type ErrorDeleteFn = unsafe extern "C" fn(*mut sys::TRITONSERVER_Error);

#[derive(Clone, Copy)]
struct ServerLog {
    is_enabled: IsEnabledFn,
    message: LogMessageFn,
    error_delete: ErrorDeleteFn,
}

/// The server's log functions, looked up at run time so that the same code also logs (to
/// stderr) outside tritonserver: in unit tests and offline tools.
fn server_log() -> Option<ServerLog> {
    static FNS: std::sync::OnceLock<Option<ServerLog>> = std::sync::OnceLock::new();
    *FNS.get_or_init(|| {
        // SAFETY: dlsym with NUL-terminated names; the symbols, when present, have the
        // signatures of tritonserver.h.
        unsafe {
            let is_enabled = libc::dlsym(libc::RTLD_DEFAULT, c"TRITONSERVER_LogIsEnabled".as_ptr());
            let message = libc::dlsym(libc::RTLD_DEFAULT, c"TRITONSERVER_LogMessage".as_ptr());
            let error_delete =
                libc::dlsym(libc::RTLD_DEFAULT, c"TRITONSERVER_ErrorDelete".as_ptr());
            if is_enabled.is_null() || message.is_null() || error_delete.is_null() {
                return None;
            }
            Some(ServerLog {
                is_enabled: std::mem::transmute::<*mut libc::c_void, IsEnabledFn>(is_enabled),
                message: std::mem::transmute::<*mut libc::c_void, LogMessageFn>(message),
                error_delete: std::mem::transmute::<*mut libc::c_void, ErrorDeleteFn>(error_delete),
            })
        }
    })
}

/// Whether the server would print a message of this level (skip formatting otherwise).
/// Outside tritonserver everything but verbose messages is printed.
pub fn enabled(level: LogLevel) -> bool {
    match server_log() {
        // SAFETY: a plain query without pointers.
        Some(server) => unsafe { (server.is_enabled)(level.to_raw()) },
        None => level != LogLevel::Verbose,
    }
}

/// Write one message to the server log (stderr outside tritonserver); failures to log are
/// ignored, there is nowhere to report them.
pub fn log(level: LogLevel, file: &str, line: u32, message: &str) {
    if !enabled(level) {
        return;
    }
    let Some(server) = server_log() else {
        eprintln!("[{level:?}] {file}:{line}: {message}");
        return;
    };
    let file = c_string_lossy(file);
    let msg = c_string_lossy(message);
    // SAFETY: both strings are valid for the call; Triton copies them.
    let err = unsafe { (server.message)(level.to_raw(), file.as_ptr(), line as i32, msg.as_ptr()) };
    if !err.is_null() {
        // SAFETY: the error returned by the call is ours to delete.
        unsafe { (server.error_delete)(err) };
    }
}

/// `log_at!(LogLevel::Info, "loaded {name}")`: format only when the level is enabled, and log
/// with the caller's file and line.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::log($level, file!(), line!(), &format!($($arg)*));
        }
    };
}

#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::LogLevel::Info, $($arg)*) };
}

#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::LogLevel::Warn, $($arg)*) };
}

#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::LogLevel::Error, $($arg)*) };
}

/// Verbose messages appear with `--log-verbose 1` or higher.
#[macro_export]
macro_rules! log_verbose {
    ($($arg:tt)*) => { $crate::log_at!($crate::log::LogLevel::Verbose, $($arg)*) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_tritonserver_messages_go_to_stderr() {
        assert!(server_log().is_none());
        assert!(enabled(LogLevel::Warn) && !enabled(LogLevel::Verbose));
        crate::log_warn!("a warning from the {} test", "log");
    }
}
