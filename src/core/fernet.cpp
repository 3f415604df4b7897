#include "fernet.hpp"

#include "base64.hpp"
#include "errors.hpp"
#include "hmac_sha256.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <new>

#include <pthread.h>

namespace conn_crypto {
namespace {

using namespace token_layout;

[[noreturn]] void crypto_failure(const char* what) {
    throw Error(ErrorKind::Crypto, std::string("OpenSSL failure: ") + what);
}

// Fetched once per process: explicit fetches avoid a provider lookup per token.
EVP_CIPHER* aes_cbc() {
    static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr);
    if (!cipher) crypto_failure("AES-128-CBC unavailable");
    return cipher;
}

std::uint64_t load_be64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

void store_be64(std::uint64_t v, std::uint8_t* p) {
    for (int i = 7; i >= 0; --i) {
        p[i] = static_cast<std::uint8_t>(v);
        v >>= 8;
    }
}

// Structural checks shared by parse_token and looks_like_token. Returns an
// empty message when the raw bytes are a well-formed token.
const char* structure_problem(const std::uint8_t* raw, std::size_t n) {
    if (n < kMinRaw) return "token is too short";
    if (raw[0] != kVersion) return "token has an unknown version byte";
    std::size_t ct = n - kHeader - kMac;
    if (ct == 0 || ct % kBlock != 0) return "token ciphertext is not a non-zero multiple of the block size";
    return nullptr;
}

}  // namespace

std::size_t token_length(std::size_t plaintext_len) noexcept {
    std::size_t blocks = plaintext_len / kBlock + 1;  // PKCS7 always adds padding
    if (blocks > (SIZE_MAX - kHeader - kMac) / kBlock) return 0;
    return base64::encoded_length(kHeader + blocks * kBlock + kMac);
}

std::size_t plaintext_bound(std::size_t token_len) noexcept {
    std::size_t raw = base64::decoded_bound(token_len);
    return raw > kHeader + kMac ? raw - kHeader - kMac : 0;
}

std::uint8_t* TokenBytes::reset(std::size_t n) {
    heap_.reset();
    if (n > kInline) heap_.reset(new std::uint8_t[n]);
    size_ = n;
    return data();
}

void TokenBytes::assign(const std::uint8_t* p, std::size_t n) {
    std::memcpy(reset(n), p, n);
}

void TokenBytes::take(TokenBytes& o) noexcept {
    heap_ = std::move(o.heap_);
    size_ = o.size_;
    if (!heap_) std::memcpy(inline_, o.inline_, size_);
    o.size_ = 0;
}

namespace {

// Decodes and checks a token into t; the reason when it is malformed.
// Throws std::bad_alloc only for tokens too long for the inline buffer.
const char* parse_into(std::string_view token, ParsedToken& t) {
    std::string_view body = base64::trim(token);
    std::uint8_t* raw = t.raw.reset(base64::decoded_bound(body.size()));
    auto n = base64::decode(body, base64::Alphabet::UrlSafe, raw);
    if (!n) return "not url-safe base64";
    t.raw.truncate(*n);
    if (const char* reason = structure_problem(raw, *n)) return reason;
    t.timestamp = load_be64(raw + 1);
    return nullptr;
}

}  // namespace

std::optional<ParsedToken> try_parse_token(std::string_view token, const char** why) noexcept {
    // One object returned on every path, so it is built in place (no copy).
    std::optional<ParsedToken> t(std::in_place);
    const char* reason = nullptr;
    try {
        reason = parse_into(token, *t);
    } catch (...) {
        reason = "out of memory";
    }
    if (reason) {
        t.reset();
        if (why) *why = reason;
    }
    return t;
}

ParsedToken parse_token(std::string_view token) {
    ParsedToken t;
    const char* why = nullptr;
    try {
        why = parse_into(token, t);
    } catch (const std::bad_alloc&) {
        why = "out of memory";
    }
    if (why) throw Error(ErrorKind::MalformedToken, std::string("malformed token: ") + why);
    return t;
}

bool cannot_be_token(std::string_view token) noexcept {
    std::string_view body = base64::trim(token);
    // The shortest token is 100 characters (98 without padding); version 0x80 encodes as 'g'.
    return body.size() < base64::encoded_length(kMinRaw) - 2 || body[0] != 'g';
}

bool looks_like_token(std::string_view token) noexcept {
    return !cannot_be_token(token) && try_parse_token(token).has_value();
}

void check_token_time(std::uint64_t timestamp, std::int64_t ttl, std::int64_t now) {
    // 128-bit arithmetic: a u64 timestamp plus any i64 cannot overflow it.
    __int128 ts = timestamp;
    if (ts + ttl < now) throw Error(ErrorKind::Expired, "token has expired (older than the ttl)");
    if (static_cast<__int128>(now) + kMaxClockSkew < ts)
        throw Error(ErrorKind::FutureTimestamp, "token timestamp is too far in the future");
}

namespace {

// An AES-128-CBC context set up once and never re-initialised per token: an
// EVP re-init just to change the IV costs more than the AES work of a token
// (OpenSSL 3.0 looks the IV length up through OSSL_PARAMs on every init).
// With padding off, successive EVP updates form one CBC chain whose value
// before each call is the last ciphertext block of the previous one; that
// value is kept here, and XORing (chain ^ IV) into the first block makes
// the call exactly CBC with the token's IV. Padding is done here (encrypt:
// PKCS7; decrypt: a constant-time PKCS7 check after the MAC check).
struct CbcChain {
    EVP_CIPHER_CTX* ctx = nullptr;
    std::uint8_t last[16] = {};  // the context's chaining value (a ciphertext block: public)
    bool synced = false;         // false after a failed update: restart before the next use
    bool encrypting = false;

    CbcChain() = default;
    CbcChain(const CbcChain&) = delete;
    CbcChain& operator=(const CbcChain&) = delete;
    ~CbcChain() { EVP_CIPHER_CTX_free(ctx); }  // frees wipe the key schedule

    void setup(const std::uint8_t* key, bool enc) {
        ctx = EVP_CIPHER_CTX_new();
        if (!ctx) crypto_failure("context allocation");
        encrypting = enc;
        if (!start(key)) crypto_failure("AES key setup");
    }

    // (Re)starts the chain at zero; with key == nullptr the key schedule stays.
    bool start(const std::uint8_t* key) {
        static const std::uint8_t zero[16] = {};
        const EVP_CIPHER* cipher = key ? aes_cbc() : nullptr;
        int ok = encrypting ? EVP_EncryptInit_ex2(ctx, cipher, key, zero, nullptr)
                            : EVP_DecryptInit_ex2(ctx, cipher, key, zero, nullptr);
        synced = ok == 1 && EVP_CIPHER_CTX_set_padding(ctx, 0) == 1;
        std::memset(last, 0, sizeof last);
        return synced;
    }

    // CBC under iv of n bytes (a non-zero multiple of 16). Encrypting works in
    // place (in == out: the first block is adjusted before the cipher runs).
    // Never throws (callers wipe on failure); false when OpenSSL fails, and
    // the chain then restarts on the next call.
    bool run(const std::uint8_t* iv, const std::uint8_t* in, std::uint8_t* out, std::size_t n) {
        if (!synced && !start(nullptr)) return false;
        if (encrypting)
            for (int i = 0; i < 16; ++i) out[i] ^= static_cast<std::uint8_t>(last[i] ^ iv[i]);
        synced = false;
        // EVP updates take an int length: feed huge inputs in chunks (multiples of 16).
        for (std::size_t done = 0; done < n;) {
            int chunk = static_cast<int>(std::min<std::size_t>(n - done, 1u << 30));
            int l = 0;
            int ok = encrypting ? EVP_EncryptUpdate(ctx, out + done, &l, in + done, chunk)
                                : EVP_DecryptUpdate(ctx, out + done, &l, in + done, chunk);
            if (ok != 1 || l != chunk) return false;
            done += static_cast<std::size_t>(chunk);
        }
        if (!encrypting)
            for (int i = 0; i < 16; ++i) out[i] ^= static_cast<std::uint8_t>(last[i] ^ iv[i]);
        std::memcpy(last, (encrypting ? out : in) + n - 16, 16);
        synced = true;
        return true;
    }
};

// Length of the PKCS7 padding ending a decrypted buffer of n >= 16 bytes, or
// 0 when it is malformed. Constant time in the padding's value.
std::size_t pkcs7_padding(const std::uint8_t* buf, std::size_t n) {
    const std::uint8_t* tail = buf + n - 16;
    const std::uint32_t pad = tail[15];
    std::uint32_t bad = (pad - 1u) >> 4;  // non-zero unless 1 <= pad <= 16
    for (std::uint32_t i = 0; i < 16; ++i) {
        std::uint32_t in_pad = 0u - (((15u - i) - pad) >> 31);  // all ones when i >= 16 - pad
        bad |= (tail[i] ^ pad) & in_pad;
    }
    return bad == 0 ? pad : 0;
}

}  // namespace

struct FernetKey::State {
    CbcChain enc;    // AES key schedule, encryption direction
    CbcChain dec;    // AES key schedule, decryption direction
    HmacSha256 mac;  // HMAC with the signing key, pads prepared

    explicit State(const std::uint8_t* signing) : mac(signing, 16) {}
};

FernetKey::FernetKey(const std::uint8_t* key32) : state_(std::make_unique<State>(key32)) {
    const std::uint8_t* encryption = key32 + 16;   // the signing half is key32[0..16)
    state_->enc.setup(encryption, true);
    state_->dec.setup(encryption, false);
}

FernetKey::~FernetKey() = default;
FernetKey::FernetKey(FernetKey&&) noexcept = default;
FernetKey& FernetKey::operator=(FernetKey&&) noexcept = default;

void FernetKey::encrypt(const std::uint8_t* plaintext, std::size_t n, std::uint64_t timestamp,
                        const std::uint8_t iv[16], char* out) const {
    const std::size_t blocks = n / kBlock + 1;
    const std::size_t ct_len = blocks * kBlock;
    const std::size_t raw_len = kHeader + ct_len + kMac;
    // raw ends up holding only public token bytes (header, ciphertext, MAC):
    // a stack buffer for typical sizes. The plaintext is padded in place and
    // encrypted over itself, so it is wiped only if the cipher fails.
    std::uint8_t small[TokenBytes::kInline];
    std::unique_ptr<std::uint8_t[]> large(raw_len > sizeof small ? new std::uint8_t[raw_len] : nullptr);
    std::uint8_t* raw = large ? large.get() : small;
    raw[0] = kVersion;
    store_be64(timestamp, raw + 1);
    std::memcpy(raw + 9, iv, 16);

    std::uint8_t* ct = raw + kHeader;
    if (n) std::memcpy(ct, plaintext, n);
    const std::uint8_t pad = static_cast<std::uint8_t>(ct_len - n);  // PKCS7: 1..16
    std::memset(ct + n, pad, pad);
    if (!state_->enc.run(iv, ct, ct, ct_len)) {
        OPENSSL_cleanse(ct, ct_len);
        crypto_failure("AES encrypt");
    }

    state_->mac.mac(raw, raw_len - kMac, raw + raw_len - kMac);
    base64::encode_urlsafe(raw, raw_len, out);
}

bool FernetKey::authenticates(const ParsedToken& token) const {
    std::uint8_t expected[kMac];
    state_->mac.mac(token.signed_data(), token.signed_len(), expected);
    return CRYPTO_memcmp(expected, token.mac(), kMac) == 0;
}

std::size_t FernetKey::decrypt_authenticated(const ParsedToken& token, std::uint8_t* out) const {
    const std::size_t n = token.ciphertext_len();
    if (!state_->dec.run(token.iv(), token.ciphertext(), out, n)) {
        OPENSSL_cleanse(out, n);
        crypto_failure("AES decrypt");
    }
    std::size_t pad = pkcs7_padding(out, n);
    if (pad == 0) {
        OPENSSL_cleanse(out, n);
        // Authenticated but badly padded: forged by a key holder, or the wrong cipher key.
        throw Error(ErrorKind::InvalidToken, "invalid token: bad padding after authentication");
    }
    return n - pad;
}

void random_bytes(std::uint8_t* buf, std::size_t n) {
    if (RAND_bytes(buf, static_cast<int>(n)) != 1) crypto_failure("random generator");
}

namespace {

// IVs come from a buffer refilled by one RAND_bytes call per 256 IVs: a
// RAND_bytes call per token costs more than the token's AES work. Bytes are
// wiped as they are handed out. A forked child discards the buffer, so a
// parent and its child never hand out the same IV.
struct IvPool {
    std::uint8_t buf[4096];
    std::size_t pos = sizeof buf;
};
thread_local IvPool iv_pool;
std::atomic<unsigned> fork_generation{0};
thread_local unsigned pool_generation = 0;

void on_fork_child() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

void random_iv(std::uint8_t iv[16]) {
    static const bool registered = (pthread_atfork(nullptr, nullptr, on_fork_child), true);
    (void)registered;
    IvPool& pool = iv_pool;
    unsigned generation = fork_generation.load(std::memory_order_relaxed);
    if (pool.pos + 16 > sizeof pool.buf || pool_generation != generation) {
        random_bytes(pool.buf, sizeof pool.buf);
        pool.pos = 0;
        pool_generation = generation;
    }
    std::memcpy(iv, pool.buf + pool.pos, 16);
    OPENSSL_cleanse(pool.buf + pool.pos, 16);
    pool.pos += 16;
}

std::int64_t unix_now() noexcept { return static_cast<std::int64_t>(std::time(nullptr)); }

}  // namespace conn_crypto
