//! `triton::Error`: an owned error with Triton's error codes, turned into a
//! `TRITONSERVER_Error*` only at the C boundary.
use std::ffi::{CStr, CString};

use triton_sys as sys;

/// Triton's error codes (`TRITONSERVER_Error_Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Unknown,
    Internal,
    NotFound,
    InvalidArg,
    Unavailable,
    Unsupported,
    AlreadyExists,
    Cancelled,
}

impl ErrorCode {
    fn to_raw(self) -> sys::TRITONSERVER_Error_Code {
        match self {
            ErrorCode::Unknown => sys::TRITONSERVER_ERROR_UNKNOWN,
            ErrorCode::Internal => sys::TRITONSERVER_ERROR_INTERNAL,
            ErrorCode::NotFound => sys::TRITONSERVER_ERROR_NOT_FOUND,
            ErrorCode::InvalidArg => sys::TRITONSERVER_ERROR_INVALID_ARG,
            ErrorCode::Unavailable => sys::TRITONSERVER_ERROR_UNAVAILABLE,
            ErrorCode::Unsupported => sys::TRITONSERVER_ERROR_UNSUPPORTED,
            ErrorCode::AlreadyExists => sys::TRITONSERVER_ERROR_ALREADY_EXISTS,
            ErrorCode::Cancelled => sys::TRITONSERVER_ERROR_CANCELLED,
        }
    }

    fn from_raw(code: sys::TRITONSERVER_Error_Code) -> Self {
        match code {
            sys::TRITONSERVER_ERROR_INTERNAL => ErrorCode::Internal,
            sys::TRITONSERVER_ERROR_NOT_FOUND => ErrorCode::NotFound,
            sys::TRITONSERVER_ERROR_INVALID_ARG => ErrorCode::InvalidArg,
            sys::TRITONSERVER_ERROR_UNAVAILABLE => ErrorCode::Unavailable,
            sys::TRITONSERVER_ERROR_UNSUPPORTED => ErrorCode::Unsupported,
            sys::TRITONSERVER_ERROR_ALREADY_EXISTS => ErrorCode::AlreadyExists,
            sys::TRITONSERVER_ERROR_CANCELLED => ErrorCode::Cancelled,
            _ => ErrorCode::Unknown,
        }
    }
}

/// An error for Triton: a code and a message that names the input or setting at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    code: ErrorCode,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArg, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `prefix: ` in front of the message.
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        Self {
            code: self.code,
            message: format!("{prefix}: {}", self.message),
        }
    }

    /// A new `TRITONSERVER_Error` owned by the caller (Triton, when returned from an entry point).
    pub(crate) fn into_raw(self) -> *mut sys::TRITONSERVER_Error {
        let msg = c_string_lossy(&self.message);
        // SAFETY: `msg` is a valid C string; Triton copies it.
        unsafe { sys::TRITONSERVER_ErrorNew(self.code.to_raw(), msg.as_ptr()) }
    }

    /// Take ownership of an error returned by a Triton API call; `None` for success (null).
    ///
    /// # Safety
    /// `raw` is null or a live error object that nobody else will delete.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONSERVER_Error) -> Option<Self> {
        if raw.is_null() {
            return None;
        }
        let code = ErrorCode::from_raw(sys::TRITONSERVER_ErrorCode(raw));
        let msg = sys::TRITONSERVER_ErrorMessage(raw);
        let message = if msg.is_null() {
            String::from("(no message)")
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        sys::TRITONSERVER_ErrorDelete(raw);
        Some(Self { code, message })
    }
}

/// Turn the status of a Triton API call into a `Result`, naming the call on failure.
pub(crate) fn check(raw: *mut sys::TRITONSERVER_Error, call: &str) -> Result<()> {
    // SAFETY: every Triton API call returns null or a new error owned by the caller.
    match unsafe { Error::from_raw(raw) } {
        None => Ok(()),
        Some(e) => Err(e.context(call)),
    }
}

/// Call a Triton getter that hands out a string owned by the object, and copy the string.
pub(crate) fn get_string(
    call: &str,
    getter: impl FnOnce(*mut *const std::os::raw::c_char) -> *mut sys::TRITONSERVER_Error,
) -> Result<String> {
    let mut text = std::ptr::null();
    check(getter(&mut text), call)?;
    // SAFETY: on success Triton set a NUL-terminated string (or null) that outlives this call.
    Ok(unsafe { string_from_c(text) })
}

/// A C string from arbitrary text; interior NULs (which C cannot carry) become spaces.
pub(crate) fn c_string_lossy(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).expect("NULs were replaced")
}

/// Read a C string owned by Triton into an owned `String`.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that lives for the call.
pub(crate) unsafe fn string_from_c(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        String::new()
    } else {
        CStr::from_ptr(ptr).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_code_and_prefixes_the_message() {
        let e = Error::invalid_arg("FEATURES has rank 3").context("request 'r1'");
        assert_eq!(e.code(), ErrorCode::InvalidArg);
        assert_eq!(e.to_string(), "request 'r1': FEATURES has rank 3");
    }

    #[test]
    fn codes_round_trip_through_their_raw_values() {
        for code in [
            ErrorCode::Unknown,
            ErrorCode::Internal,
            ErrorCode::NotFound,
            ErrorCode::InvalidArg,
            ErrorCode::Unavailable,
            ErrorCode::Unsupported,
            ErrorCode::AlreadyExists,
            ErrorCode::Cancelled,
        ] {
            assert_eq!(ErrorCode::from_raw(code.to_raw()), code);
        }
    }

    #[test]
    fn interior_nul_does_not_lose_the_message() {
        assert_eq!(c_string_lossy("a\0b").to_str().unwrap(), "a b");
    }
}
