// The SHA256_* functions are deprecated in OpenSSL 3 in favour of EVP, whose
// per-call overhead is what this file avoids; they remain part of the API.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "hmac_sha256.hpp"

#include "errors.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstring>
#include <string>

namespace conn_crypto {

struct HmacSha256::Pads {
    SHA256_CTX inner;   // state after hashing key ^ ipad
    SHA256_CTX outer;   // state after hashing key ^ opad
    ~Pads() { OPENSSL_cleanse(this, sizeof *this); }
};

namespace {

constexpr std::size_t kBlock = 64;

[[noreturn]] void sha_failure() { throw Error(ErrorKind::Crypto, "OpenSSL failure: SHA-256"); }

}  // namespace

HmacSha256::HmacSha256(const std::uint8_t* key, std::size_t key_len) : pads_(std::make_unique<Pads>()) {
    std::uint8_t block[kBlock] = {};
    if (key_len > kBlock) {
        if (!SHA256(key, key_len, block)) sha_failure();
    } else {
        std::memcpy(block, key, key_len);
    }
    std::uint8_t pad[kBlock];
    bool ok = true;
    for (std::size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ 0x36;
    ok = ok && SHA256_Init(&pads_->inner) == 1 && SHA256_Update(&pads_->inner, pad, kBlock) == 1;
    for (std::size_t i = 0; i < kBlock; ++i) pad[i] = block[i] ^ 0x5c;
    ok = ok && SHA256_Init(&pads_->outer) == 1 && SHA256_Update(&pads_->outer, pad, kBlock) == 1;
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
    if (!ok) sha_failure();
}

HmacSha256::~HmacSha256() = default;
HmacSha256::HmacSha256(HmacSha256&&) noexcept = default;
HmacSha256& HmacSha256::operator=(HmacSha256&&) noexcept = default;

void HmacSha256::mac(const std::uint8_t* data, std::size_t n, std::uint8_t out[kSize]) const {
    SHA256_CTX ctx = pads_->inner;
    std::uint8_t inner_digest[kSize];
    bool ok = SHA256_Update(&ctx, data, n) == 1 && SHA256_Final(inner_digest, &ctx) == 1;
    ctx = pads_->outer;
    ok = ok && SHA256_Update(&ctx, inner_digest, kSize) == 1 && SHA256_Final(out, &ctx) == 1;
    OPENSSL_cleanse(&ctx, sizeof ctx);
    OPENSSL_cleanse(inner_digest, sizeof inner_digest);
    if (!ok) sha_failure();
}

}  // namespace conn_crypto
