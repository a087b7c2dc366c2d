#include "exatrkx-pipeline/src/gpu/torch_stream.h"

#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <stdexcept>

#include "exatrkx-pipeline/src/gpu/torch_stream.rs.h"

namespace exatrkx {

namespace {

const c10::impl::DeviceGuardImplInterface* cuda_impl() {
    // Throws when libtorch was built without CUDA (the CUDA guard registers itself on load).
    return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
}

TorchStream pack(const c10::Stream& s) {
    auto packed = s.pack3();
    return TorchStream{packed.stream_id, static_cast<std::int8_t>(packed.device_index),
                       static_cast<std::int8_t>(packed.device_type)};
}

}  // namespace

TorchStream exchange_cuda_stream(std::uint64_t handle, std::int8_t device) {
    const auto* impl = cuda_impl();
    // c10 names a stream it did not create by its handle (getStreamFromExternal does the same);
    // checked below, so a libtorch that encodes streams differently is refused, not misused.
    c10::Stream ours(c10::Stream::UNSAFE, c10::Device(c10::DeviceType::CUDA, device),
                     static_cast<c10::StreamId>(handle));
    if (impl->getStreamNativeHandle(ours) != reinterpret_cast<void*>(handle)) {
        throw std::runtime_error("libtorch does not map external CUDA streams by handle");
    }
    return pack(impl->exchangeStream(ours));
}

void restore_stream(const TorchStream& previous) {
    auto s = c10::Stream::unpack3(previous.id, previous.device_index,
                                  static_cast<c10::DeviceType>(previous.device_type));
    cuda_impl()->exchangeStream(s);
}

}  // namespace exatrkx
