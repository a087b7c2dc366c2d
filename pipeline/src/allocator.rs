//! glibc allocator settings for the networks' large temporaries.
//!
//! An E x hidden activation of the GNN or filter is tens of MB. With glibc's defaults such
//! blocks are `mmap`ed and unmapped on every call, and each call page-faults them in again:
//! on the 2-core test machine that doubled the GNN's time (616k minor faults per call, 44k
//! with the settings below). Keeping them in the heap trades a few hundred MB of resident
//! memory, reused by every event, for that time.

/// Blocks below this stay in the heap instead of being `mmap`ed.
pub const MMAP_THRESHOLD: i32 = 1 << 30;
/// Free memory at the heap's top kept instead of being returned to the OS.
pub const TRIM_THRESHOLD: i32 = i32::MAX;
/// Extra memory obtained with each heap growth.
pub const TOP_PAD: i32 = 256 << 20;

/// The environment variables glibc reads for the same settings: a user who sets any of them
/// keeps full control and nothing is changed.
pub const MALLOC_ENV: [&str; 3] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// What `tune_allocator` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorTuning {
    Applied,
    /// A `MALLOC_*` variable is set in the environment.
    LeftToEnvironment,
    /// glibc refused a setting, or this is not glibc.
    Unavailable,
}

/// Apply the settings above process-wide (see the module documentation). Call once, early.
pub fn tune_allocator() -> AllocatorTuning {
    if MALLOC_ENV.iter().any(|k| std::env::var_os(k).is_some()) {
        return AllocatorTuning::LeftToEnvironment;
    }
    set_glibc()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_glibc() -> AllocatorTuning {
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
    };
    if ok {
        AllocatorTuning::Applied
    } else {
        AllocatorTuning::Unavailable
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc() -> AllocatorTuning {
    AllocatorTuning::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_settings_unless_the_environment_has_its_own() {
        let expected = if MALLOC_ENV.iter().any(|k| std::env::var_os(k).is_some()) {
            AllocatorTuning::LeftToEnvironment
        } else {
            AllocatorTuning::Applied
        };
        assert_eq!(tune_allocator(), expected);
    }
}
