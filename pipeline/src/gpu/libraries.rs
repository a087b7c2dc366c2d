//! Finding the CUDA driver and NVRTC before cudarc loads them (cudarc panics when they are
//! missing).
//!
//! The driver (`libcuda.so`) comes with the GPU's driver install. NVRTC comes with the torch
//! wheel (`nvidia/cu13/lib/libnvrtc.so.13`, beside the `libcudart.so.13` that libtorch loads),
//! which is on no library search path. So the NVRTC libraries found beside the CUDA runtime this
//! process already has loaded are loaded first; cudarc's later `dlopen("libnvrtc.so.13")` then
//! finds them by soname. `EXATRKX_CUDA_LIB_DIR` names another folder to look in.
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Folders of the CUDA runtime and NVRTC libraries mapped into this process.
fn loaded_cuda_dirs() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let path = Path::new(path);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("libcudart.so") || name.starts_with("libnvrtc.so") {
            if let Some(dir) = path.parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
    }
    dirs
}

/// NVRTC and its builtins in `dir` (builtins first: NVRTC loads them by soname).
fn nvrtc_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.starts_with("libnvrtc-builtins.so.") || name.starts_with("libnvrtc.so."))
                && !name.contains(".alt.")
        })
        .collect();
    files.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
    files
}

/// Load the NVRTC libraries beside the CUDA runtime (once; they stay loaded).
fn preload_nvrtc() -> &'static [PathBuf] {
    static LOADED: OnceLock<Vec<PathBuf>> = OnceLock::new();
    LOADED.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = std::env::var_os("EXATRKX_CUDA_LIB_DIR")
            .map(|d| vec![PathBuf::from(d)])
            .unwrap_or_default();
        dirs.extend(loaded_cuda_dirs());
        let mut loaded = Vec::new();
        for dir in dirs {
            for file in nvrtc_files(&dir) {
                let Ok(c_path) = CString::new(file.to_string_lossy().as_bytes()) else {
                    continue;
                };
                // SAFETY: dlopen of a shared library by path; the handle is never closed, so
                // the library stays mapped for the process (cudarc keeps using it).
                let handle =
                    unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                if !handle.is_null() {
                    loaded.push(file);
                }
            }
            if !loaded.is_empty() {
                break;
            }
        }
        loaded
    })
}

/// `Ok` when the CUDA driver library can be loaded.
pub fn driver_available() -> Result<(), String> {
    // SAFETY: only tries to dlopen the candidate library names.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err("no CUDA driver: libcuda.so cannot be loaded (is the NVIDIA driver installed?)".into())
    }
}

/// `Ok` when NVRTC (the runtime compiler for our kernels) can be loaded; it names the file.
pub fn nvrtc_available() -> Result<String, String> {
    let preloaded = preload_nvrtc();
    // SAFETY: only tries to dlopen the candidate library names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(preloaded
            .iter()
            .find(|p| !p.to_string_lossy().contains("builtins"))
            .map_or_else(
                || "libnvrtc from the library search path".into(),
                |p| p.display().to_string(),
            ))
    } else {
        Err(
            "NVRTC (libnvrtc.so.13) cannot be loaded: it ships with the torch wheel in \
             nvidia/cu13/lib; put that folder on LD_LIBRARY_PATH or in EXATRKX_CUDA_LIB_DIR"
                .into(),
        )
    }
}
