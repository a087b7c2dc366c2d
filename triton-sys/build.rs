//! Generates the FFI from Triton's headers, which are never committed. Lookup order:
//! `$TRITON_INCLUDE_DIR`, `/opt/tritonserver/include`, then `build/triton-headers` in the
//! workspace (filled by `scripts/fetch-triton-headers.sh`, run by `make setup`).
use std::path::{Path, PathBuf};

fn has_headers(dir: &Path) -> bool {
    dir.join("triton/core/tritonbackend.h").is_file()
        && dir.join("triton/core/tritonserver.h").is_file()
}

fn include_dir() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("TRITON_INCLUDE_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from("/opt/tritonserver/include"));
    candidates.push(manifest.join("../build/triton-headers"));
    for dir in &candidates {
        if has_headers(dir) {
            return dir.clone();
        }
    }
    panic!(
        "Triton headers not found (looked in {candidates:?}). Run `scripts/fetch-triton-headers.sh` \
         (part of `make setup`) or set TRITON_INCLUDE_DIR to a directory holding triton/core/tritonbackend.h"
    );
}

const BACKEND_ENTRY_POINTS: &str = "TRITONBACKEND_(Initialize|Finalize|ModelInitialize|\
ModelFinalize|ModelInstanceInitialize|ModelInstanceFinalize|ModelInstanceExecute|\
GetBackendAttribute|ModelBatcherInitialize|ModelBatcherFinalize|ModelBatchIncludeRequest|\
ModelBatchInitialize|ModelBatchFinalize)";

fn main() {
    println!("cargo:rerun-if-env-changed=TRITON_INCLUDE_DIR");
    let include = include_dir();
    println!(
        "cargo:rerun-if-changed={}",
        include.join("triton/core").display()
    );
    println!("cargo:include={}", include.display());

    let bindings = bindgen::Builder::default()
        .header(
            include
                .join("triton/core/tritonbackend.h")
                .to_string_lossy(),
        )
        .clang_args(["-x", "c++", "-std=c++11"])
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("TRITON(SERVER|BACKEND)_.*")
        .allowlist_type("TRITON(SERVER|BACKEND)_.*")
        .allowlist_var("TRITON(SERVER|BACKEND)_.*")
        // The entry points a backend implements (TRITONBACKEND_ISPEC): the backend defines
        // them itself, so no import declarations for them.
        .blocklist_function(BACKEND_ENTRY_POINTS)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .derive_default(true)
        .generate()
        .expect("bindgen failed on Triton's headers");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("cannot write bindings");
}
