// libtorch's current CUDA stream, read and set through c10's device-generic interface (no CUDA
// headers needed). Bridged to Rust by `torch_stream.rs`.
#pragma once
#include <cstdint>

namespace exatrkx {

struct TorchStream;

// Make the CUDA stream `handle` (a CUstream of device `device`) libtorch's current stream for
// that device on the calling thread; returns the stream that was current.
TorchStream exchange_cuda_stream(std::uint64_t handle, std::int8_t device);

// Make `previous` (a value returned by exchange_cuda_stream) current again.
void restore_stream(const TorchStream& previous);

}  // namespace exatrkx
