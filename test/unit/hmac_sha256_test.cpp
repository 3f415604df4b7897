// HMAC-SHA256 with prepared pads: RFC 4231 vectors, and agreement with
// OpenSSL's one-shot HMAC() for every message length around the block sizes.
#include "hmac_sha256.hpp"

#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using conn_crypto::HmacSha256;

namespace {

std::string hex_mac(const std::vector<std::uint8_t>& key, const std::string& data) {
    HmacSha256 h(key.data(), key.size());
    std::uint8_t out[HmacSha256::kSize];
    h.mac(reinterpret_cast<const std::uint8_t*>(data.data()), data.size(), out);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (std::uint8_t b : out) {
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

}  // namespace

TEST(HmacSha256, Rfc4231Vectors) {
    EXPECT_EQ(hex_mac(std::vector<std::uint8_t>(20, 0x0b), "Hi There"),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    EXPECT_EQ(hex_mac({'J', 'e', 'f', 'e'}, "what do ya want for nothing?"),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(hex_mac(std::vector<std::uint8_t>(20, 0xaa), std::string(50, '\xdd')),
              "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    EXPECT_EQ(hex_mac(std::vector<std::uint8_t>(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First"),
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(HmacSha256, AgreesWithOpenSslOneShot) {
    for (std::size_t key_len : {0u, 1u, 16u, 32u, 63u, 64u, 65u, 200u}) {
        std::vector<std::uint8_t> key(key_len + 1);   // one spare byte: HMAC() refuses a null key pointer
        for (std::size_t i = 0; i < key_len; ++i) key[i] = static_cast<std::uint8_t>(i * 7 + 3);
        HmacSha256 h(key.data(), key_len);
        for (std::size_t n = 0; n <= 300; ++n) {
            std::vector<std::uint8_t> msg(n);
            for (std::size_t i = 0; i < n; ++i) msg[i] = static_cast<std::uint8_t>(i * 13 + n);
            std::uint8_t mine[32], theirs[32];
            unsigned int len = 0;
            h.mac(msg.data(), msg.size(), mine);
            ASSERT_NE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key_len), msg.data(), msg.size(), theirs, &len),
                      nullptr);
            ASSERT_EQ(len, 32u);
            ASSERT_EQ(0, std::memcmp(mine, theirs, 32)) << "key " << key_len << " message " << n;
        }
    }
}
