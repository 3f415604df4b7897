#pragma once
#include "no_postgres.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>

namespace conn_crypto {

// HMAC-SHA256 (RFC 2104) with the key's inner and outer pad states hashed
// once. Each MAC then costs the SHA-256 blocks of the message and of the
// outer hash, nothing else: a Fernet token's MAC covers about 100 bytes, and
// OpenSSL 3's EVP_MAC re-initialisation (a context copy with allocations and
// parameter lookups per call) cost several times that. SHA-256 is OpenSSL's.
class HmacSha256 {
public:
    static constexpr std::size_t kSize = 32;

    HmacSha256(const std::uint8_t* key, std::size_t key_len);
    ~HmacSha256();
    HmacSha256(HmacSha256&&) noexcept;
    HmacSha256& operator=(HmacSha256&&) noexcept;

    void mac(const std::uint8_t* data, std::size_t n, std::uint8_t out[kSize]) const;

private:
    struct Pads;
    std::unique_ptr<Pads> pads_;   // key-equivalent: wiped on destruction
};

}  // namespace conn_crypto
