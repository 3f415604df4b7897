// Byte buffers that hold secrets (keys, plaintext) and are wiped with
// OPENSSL_cleanse before their memory is released.
#pragma once
#include "no_postgres.hpp"

#include <openssl/crypto.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace conn_crypto {

template <class T>
struct CleansingAllocator {
    using value_type = T;
    CleansingAllocator() noexcept = default;
    template <class U>
    CleansingAllocator(const CleansingAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
    void deallocate(T* p, std::size_t n) noexcept {
        OPENSSL_cleanse(p, n * sizeof(T));
        std::allocator<T>{}.deallocate(p, n);
    }
    template <class U>
    bool operator==(const CleansingAllocator<U>&) const noexcept { return true; }
    template <class U>
    bool operator!=(const CleansingAllocator<U>&) const noexcept { return false; }
};

using SecureBytes = std::vector<std::uint8_t, CleansingAllocator<std::uint8_t>>;

}  // namespace conn_crypto
