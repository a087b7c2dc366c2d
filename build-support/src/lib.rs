//! Shared by the build scripts of every package that links libtorch (the backend cdylib, the
//! CLI, test binaries). Each such package must depend on `torch-sys` directly, because only then
//! does cargo hand its build script `DEP_TCH_LIBTORCH_LIB`.

/// Emit the linker arguments that make a final artefact load libtorch without environment
/// variables: an rpath to the libtorch directory, and `-ltorch` kept even though no symbol of it
/// is referenced directly (otherwise `--as-needed` drops it and CUDA silently stays unavailable).
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib) if !lib.is_empty() => {
            println!("cargo:rustc-link-search=native={lib}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        }
        _ => println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB is not set: does this package depend on torch-sys directly?"
        ),
    }
    // `$ORIGIN` lets a deployment place libtorch beside the artefact instead.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-ltorch_cpu");
    println!("cargo:rustc-link-arg=-lc10");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
