//! The CUDA source (`kernels.cu`), its compilation with NVRTC, and the loaded kernels.
//!
//! The source is compiled once per device and process (instances share the module; each has
//! its own stream): to a CUBIN for the device's architecture, or, when this NVRTC does not know
//! that architecture, to PTX for the oldest one it supports, which the driver compiles on load.
//! `--fmad=false` keeps multiply-adds unfused (the distances must round as on the CPU; the
//! kernels also spell them with the `__d*_rn` intrinsics).
use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};

use crate::error::{PipelineError, Result};
use crate::gpu::frnn::GridParams;
use crate::gpu::{driver_error, no_panic};

const SOURCE: &str = include_str!("kernels.cu");

/// Threads per block of the neighbour-search kernels (also their `__launch_bounds__`).
pub(crate) const QUERY_THREADS: u32 = 128;
/// Threads per block of the other kernels.
pub(crate) const THREADS: u32 = 256;
/// The oldest architecture NVRTC 13 compiles for: the PTX fallback.
const PTX_FALLBACK: (u32, u32) = (7, 5);

/// The full CUDA source: the constants shared with Rust, then `kernels.cu`.
pub fn kernel_source() -> String {
    format!(
        "#define EXATRKX_GRID_PARAMS_BYTES {}\n#define EXATRKX_QUERY_THREADS {}\n{SOURCE}",
        std::mem::size_of::<GridParams>(),
        QUERY_THREADS,
    )
}

/// What NVRTC produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeTarget {
    /// Machine code for compute capability `major.minor` (`sm_XY`).
    Cubin(u32, u32),
    /// PTX for compute capability `major.minor` (`compute_XY`), compiled by the driver on load.
    Ptx(u32, u32),
}

/// NVRTC's log, trimmed, for error messages.
fn program_log(prog: nvrtc_sys::nvrtcProgram) -> String {
    // SAFETY: `prog` is a live program (destroyed only by the caller, after this).
    let log = unsafe { nvrtc::get_program_log(prog) }.unwrap_or_default();
    let bytes: Vec<u8> = log
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Compile the kernels with NVRTC: CUBIN bytes, or NUL-terminated PTX text. Needs NVRTC, not a
/// GPU (see `nvrtc_available`).
pub fn compile_kernels(target: CodeTarget) -> Result<Vec<u8>> {
    let fail = |what: String| PipelineError::Device(format!("compiling the CUDA kernels: {what}"));
    let source = CString::new(kernel_source()).map_err(|e| fail(e.to_string()))?;
    let name = CString::new("exatrkx_kernels.cu").map_err(|e| fail(e.to_string()))?;
    let arch = match target {
        CodeTarget::Cubin(major, minor) => format!("--gpu-architecture=sm_{major}{minor}"),
        CodeTarget::Ptx(major, minor) => format!("--gpu-architecture=compute_{major}{minor}"),
    };
    let options = [arch.as_str(), "--fmad=false", "--std=c++17"];
    no_panic("compiling the CUDA kernels", || {
        let prog = nvrtc::create_program(&source, Some(&name)).map_err(|e| fail(e.to_string()))?;
        // SAFETY: `prog` was created above and is destroyed once, at the end of this block;
        // the output buffers are sized by NVRTC's own size queries.
        let out = unsafe {
            let compiled = nvrtc::compile_program(prog, &options)
                .map_err(|e| fail(format!("{e:?} with {options:?}: {}", program_log(prog))));
            let code = compiled.and_then(|()| match target {
                CodeTarget::Cubin(..) => {
                    let mut size = 0usize;
                    nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size)
                        .result()
                        .map_err(|e| fail(format!("{e:?}")))?;
                    let mut cubin = vec![0u8; size];
                    nvrtc_sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                        .result()
                        .map_err(|e| fail(format!("{e:?}")))?;
                    Ok(cubin)
                }
                CodeTarget::Ptx(..) => nvrtc::get_ptx(prog)
                    .map(|ptx| ptx.iter().map(|&c| c as u8).collect())
                    .map_err(|e| fail(format!("{e:?}"))),
            });
            let _ = nvrtc::destroy_program(prog);
            code
        };
        out
    })
}

/// The loaded kernels of one device.
pub(crate) struct Kernels {
    pub grid_cells: CudaFunction,
    pub grid_fill: CudaFunction,
    pub frnn_count: CudaFunction,
    pub frnn_fill: CudaFunction,
    pub cc_hook: CudaFunction,
    pub cc_compress: CudaFunction,
    _module: Arc<CudaModule>,
}

impl Kernels {
    /// The kernels on `ctx`'s device: compiled and loaded by the first pipeline there.
    pub fn for_context(ctx: &Arc<CudaContext>) -> Result<Arc<Self>> {
        static LOADED: Mutex<Vec<(usize, Arc<Kernels>)>> = Mutex::new(Vec::new());
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = loaded.iter().find(|(d, _)| *d == ctx.ordinal()) {
            return Ok(k.clone());
        }
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver_error("reading the compute capability"))?;
        let (major, minor) = (major.max(0) as u32, minor.max(0) as u32);
        let code = compile_kernels(CodeTarget::Cubin(major, minor)).or_else(|e| {
            tracing::info!(
                error = %e,
                "no CUBIN for sm_{major}{minor} from this NVRTC; loading PTX instead"
            );
            compile_kernels(CodeTarget::Ptx(PTX_FALLBACK.0, PTX_FALLBACK.1))
        })?;
        let module = ctx
            .load_module(Ptx::from_binary(code))
            .map_err(driver_error("loading the CUDA kernels"))?;
        let function = |name: &'static str| {
            module
                .load_function(name)
                .map_err(driver_error("finding a CUDA kernel"))
        };
        let kernels = Arc::new(Kernels {
            grid_cells: function("grid_cells")?,
            grid_fill: function("grid_fill")?,
            frnn_count: function("frnn_count")?,
            frnn_fill: function("frnn_fill")?,
            cc_hook: function("cc_hook")?,
            cc_compress: function("cc_compress")?,
            _module: module,
        });
        loaded.push((ctx.ordinal(), kernels.clone()));
        Ok(kernels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC compiles the kernels (syntax, types, the layout assertions) for the lent GPUs'
    /// architecture and for the PTX fallback. Needs NVRTC, not a GPU; skipped without it.
    #[test]
    fn kernels_compile_with_nvrtc() {
        match crate::gpu::nvrtc_available() {
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
            Ok(lib) => eprintln!("NVRTC: {lib}"),
        }
        let cubin = compile_kernels(CodeTarget::Cubin(9, 0)).unwrap();
        assert_eq!(&cubin[..4], b"\x7fELF", "a CUBIN is an ELF image");
        let ptx = compile_kernels(CodeTarget::Ptx(PTX_FALLBACK.0, PTX_FALLBACK.1)).unwrap();
        let text = String::from_utf8_lossy(&ptx);
        for kernel in [
            "grid_cells",
            "grid_fill",
            "frnn_count",
            "frnn_fill",
            "cc_hook",
            "cc_compress",
        ] {
            assert!(
                text.contains(&format!(".entry {kernel}(")),
                "{kernel} missing"
            );
        }
        // No fused multiply-add on doubles anywhere: the distances round as on the CPU.
        assert!(
            !text.contains("fma.rn.f64"),
            "a fused f64 multiply-add slipped in"
        );
    }

    #[test]
    fn source_errors_name_the_problem() {
        if crate::gpu::nvrtc_available().is_err() {
            eprintln!("skipped: no NVRTC");
            return;
        }
        // An architecture NVRTC does not know fails with its message, not a panic.
        let err = compile_kernels(CodeTarget::Cubin(1, 0)).unwrap_err();
        assert!(
            err.to_string().contains("compiling the CUDA kernels"),
            "{err}"
        );
    }
}
