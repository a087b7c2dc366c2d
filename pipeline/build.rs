//! Links libtorch, and builds the small C++ shim (`src/gpu/torch_stream.cc`, through `cxx`) that
//! lets libtorch run on a CUDA stream of ours. The shim needs only libtorch's c10 headers (no CUDA
//! toolkit): it goes through c10's device-generic stream interface.
use std::path::PathBuf;

fn main() {
    build_support::link_libtorch();

    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("DEP_TCH_LIBTORCH_LIB is not set: exatrkx-pipeline must depend on torch-sys");
    let include = PathBuf::from(&lib).join("..").join("include");
    if !include
        .join("c10/core/impl/DeviceGuardImplInterface.h")
        .is_file()
    {
        panic!(
            "libtorch headers not found under {}: set LIBTORCH to a libtorch (or the torch wheel) \
             that ships include/",
            include.display()
        );
    }
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cxx_build::bridge("src/gpu/torch_stream.rs")
        .file("src/gpu/torch_stream.cc")
        .include(&include)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .flag_if_supported("-Wno-unused-parameter")
        .compile("exatrkx_torch_stream");
    for file in [
        "src/gpu/torch_stream.rs",
        "src/gpu/torch_stream.cc",
        "src/gpu/torch_stream.h",
    ] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
}
