// Differential check of token creation: Keyring::encrypt against the Fernet
// spec computed here with plain OpenSSL one-shots and a base64 codec of our
// own. Input: key (32) | timestamp (u64 big-endian) | IV (16) | plaintext;
// missing header bytes are zero. Any disagreement aborts.
#include "errors.hpp"
#include "fernet.hpp"
#include "keyring.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using namespace conn_crypto;

namespace {

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            std::fprintf(stderr, "differential_fuzz: mismatch at line %d: %s\n", __LINE__, \
                         #cond);                                                            \
            std::abort();                                                                   \
        }                                                                                   \
    } while (0)

constexpr std::size_t kHeaderIn = 32 + 8 + 16;
constexpr std::size_t kGuard = 64;
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string b64url_encode(const std::uint8_t* p, std::size_t n) {
    std::string s;
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i < n; ++i) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            s += kAlphabet[(acc >> bits) & 63];
        }
    }
    if (bits) s += kAlphabet[(acc << (6 - bits)) & 63];
    while (s.size() % 4) s += '=';
    return s;
}

// Only the canonical padded form: that is what a token must look like.
std::optional<std::vector<std::uint8_t>> b64url_decode(std::string_view s) {
    if (s.size() % 4) return std::nullopt;
    std::size_t pad = 0;
    while (pad < 2 && pad < s.size() && s[s.size() - 1 - pad] == '=') ++pad;
    std::vector<std::uint8_t> out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i < s.size() - pad; ++i) {
        const char* hit = std::strchr(kAlphabet, s[i]);
        if (!hit || !*hit) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(hit - kAlphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>(acc >> bits));
        }
    }
    if (acc & ((1u << bits) - 1)) return std::nullopt;
    return out;
}

struct CipherCtx {
    EVP_CIPHER_CTX* p = EVP_CIPHER_CTX_new();
    ~CipherCtx() { EVP_CIPHER_CTX_free(p); }
};

// AES-128-CBC with PKCS7 on a fresh context: nothing shared with the core.
std::vector<std::uint8_t> aes_cbc(bool encrypt, const std::uint8_t* key, const std::uint8_t* iv,
                                  const std::uint8_t* in, std::size_t n) {
    CipherCtx ctx;
    CHECK(ctx.p);
    std::vector<std::uint8_t> out(n + 16);
    int l1 = 0, l2 = 0;
    CHECK(EVP_CipherInit_ex(ctx.p, EVP_aes_128_cbc(), nullptr, key, iv, encrypt ? 1 : 0) == 1);
    CHECK(EVP_CipherUpdate(ctx.p, out.data(), &l1, in, static_cast<int>(n)) == 1);
    CHECK(EVP_CipherFinal_ex(ctx.p, out.data() + l1, &l2) == 1);
    out.resize(static_cast<std::size_t>(l1 + l2));
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::uint8_t header[kHeaderIn] = {};
    if (size) std::memcpy(header, data, std::min(size, kHeaderIn));
    const std::uint8_t* key = header;
    std::uint64_t ts = 0;
    for (int i = 0; i < 8; ++i) ts = (ts << 8) | header[32 + i];
    const std::uint8_t* iv = header + 40;
    const std::uint8_t* pt = size > kHeaderIn ? data + kHeaderIn : header;
    const std::size_t n = size > kHeaderIn ? size - kHeaderIn : 0;

    const std::string key_text = b64url_encode(key, 32);
    const Keyring ring = Keyring::parse(key_text);
    const std::size_t len = token_length(n);
    std::string out(len + kGuard, '\x5a');
    ring.encrypt(pt, n, out.data(), ts, iv);
    for (std::size_t i = len; i < out.size(); ++i) CHECK(out[i] == '\x5a');
    out.resize(len);

    // Structure, field by field.
    auto raw = b64url_decode(out);
    CHECK(raw.has_value());
    const std::size_t ct_len = (n / 16 + 1) * 16;
    CHECK(raw->size() == 1 + 8 + 16 + ct_len + 32);
    CHECK((*raw)[0] == 0x80);
    for (int i = 0; i < 8; ++i) CHECK((*raw)[1 + i] == static_cast<std::uint8_t>(ts >> (56 - 8 * i)));
    CHECK(std::memcmp(raw->data() + 9, iv, 16) == 0);
    const std::uint8_t* ct = raw->data() + 25;

    // HMAC-SHA256 with key[0:16] over version | timestamp | IV | ciphertext.
    std::uint8_t mac[32];
    unsigned int mac_len = 0;
    CHECK(HMAC(EVP_sha256(), key, 16, raw->data(), 25 + ct_len, mac, &mac_len) != nullptr && mac_len == 32);
    CHECK(std::memcmp(mac, raw->data() + 25 + ct_len, 32) == 0);

    // AES-128-CBC with key[16:32] decrypts to the plaintext, and the cipher
    // run the other way gives exactly the token's ciphertext.
    auto dec = aes_cbc(false, key + 16, iv, ct, ct_len);
    CHECK(dec.size() == n && (n == 0 || std::memcmp(dec.data(), pt, n) == 0));
    auto enc = aes_cbc(true, key + 16, iv, pt, n);
    CHECK(enc.size() == ct_len && std::memcmp(enc.data(), ct, ct_len) == 0);

    // The whole token, rebuilt independently, is identical.
    CHECK(b64url_encode(raw->data(), raw->size()) == out);

    // And the core reads back what it wrote.
    std::vector<std::uint8_t> back(plaintext_bound(len));
    Decrypted d = ring.decrypt(out, back.data());
    CHECK(d.key_index == 0 && d.timestamp == ts && d.length == n);
    CHECK(n == 0 || std::memcmp(back.data(), pt, n) == 0);
    CHECK(ring.extract_timestamp(out) == ts);
    if (ts <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        CHECK(ring.decrypt(out, back.data(), 0, static_cast<std::int64_t>(ts)).length == n);
    return 0;
}
