#include "fernet.hpp"

#include "base64.hpp"
#include "errors.hpp"
#include "hmac_sha256.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

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

struct FernetKey::State {
    EVP_CIPHER_CTX* enc = nullptr;  // AES key schedule, encryption direction
    EVP_CIPHER_CTX* dec = nullptr;  // AES key schedule, decryption direction
    HmacSha256 mac;                 // HMAC with the signing key, pads prepared

    explicit State(const std::uint8_t* signing) : mac(signing, 16) {}
    ~State() {
        EVP_CIPHER_CTX_free(enc);  // frees wipe the key schedules
        EVP_CIPHER_CTX_free(dec);
    }
};

FernetKey::FernetKey(const std::uint8_t* key32) : state_(std::make_unique<State>(key32)) {
    const std::uint8_t* encryption = key32 + 16;   // the signing half is key32[0..16)
    state_->enc = EVP_CIPHER_CTX_new();
    state_->dec = EVP_CIPHER_CTX_new();
    if (!state_->enc || !state_->dec) crypto_failure("context allocation");
    if (EVP_EncryptInit_ex2(state_->enc, aes_cbc(), encryption, nullptr, nullptr) != 1 ||
        EVP_DecryptInit_ex2(state_->dec, aes_cbc(), encryption, nullptr, nullptr) != 1)
        crypto_failure("AES key setup");
}

FernetKey::~FernetKey() = default;
FernetKey::FernetKey(FernetKey&&) noexcept = default;
FernetKey& FernetKey::operator=(FernetKey&&) noexcept = default;

void FernetKey::encrypt(const std::uint8_t* plaintext, std::size_t n, std::uint64_t timestamp,
                        const std::uint8_t iv[16], char* out) const {
    std::size_t blocks = n / kBlock + 1;
    std::size_t raw_len = kHeader + blocks * kBlock + kMac;
    // raw only ever holds the public token bytes (header, ciphertext, MAC):
    // a stack buffer for typical sizes, no wipe needed.
    std::uint8_t small[TokenBytes::kInline];
    std::unique_ptr<std::uint8_t[]> large(raw_len > sizeof small ? new std::uint8_t[raw_len] : nullptr);
    std::uint8_t* raw = large ? large.get() : small;
    raw[0] = kVersion;
    store_be64(timestamp, raw + 1);
    std::memcpy(raw + 9, iv, 16);

    EVP_CIPHER_CTX* ctx = state_->enc;
    int l1 = 0, l2 = 0;
    if (EVP_EncryptInit_ex2(ctx, nullptr, nullptr, iv, nullptr) != 1) crypto_failure("AES init");
    // EVP_EncryptUpdate takes an int length: feed huge inputs in chunks.
    std::size_t done = 0, written = 0;
    std::uint8_t* ct = raw + kHeader;
    while (done < n) {
        int chunk = static_cast<int>(std::min<std::size_t>(n - done, 1u << 30));
        if (EVP_EncryptUpdate(ctx, ct + written, &l1, plaintext + done, chunk) != 1) crypto_failure("AES encrypt");
        done += static_cast<std::size_t>(chunk);
        written += static_cast<std::size_t>(l1);
    }
    if (EVP_EncryptFinal_ex(ctx, ct + written, &l2) != 1) crypto_failure("AES final");
    written += static_cast<std::size_t>(l2);
    if (written != blocks * kBlock) crypto_failure("AES length");

    state_->mac.mac(raw, raw_len - kMac, raw + raw_len - kMac);
    base64::encode_urlsafe(raw, raw_len, out);
}

bool FernetKey::authenticates(const ParsedToken& token) const {
    std::uint8_t expected[kMac];
    state_->mac.mac(token.signed_data(), token.signed_len(), expected);
    return CRYPTO_memcmp(expected, token.mac(), kMac) == 0;
}

std::size_t FernetKey::decrypt_authenticated(const ParsedToken& token, std::uint8_t* out) const {
    EVP_CIPHER_CTX* ctx = state_->dec;
    const std::size_t n = token.ciphertext_len();
    // Check the pad byte (1..16) before handing the buffer to the cipher.
    if (EVP_DecryptInit_ex2(ctx, nullptr, nullptr, token.iv(), nullptr) != 1) crypto_failure("AES init");
    std::size_t done = 0, written = 0;
    int l = 0;
    while (done < n) {
        int chunk = static_cast<int>(std::min<std::size_t>(n - done, 1u << 30));
        if (EVP_DecryptUpdate(ctx, out + written, &l, token.ciphertext() + done, chunk) != 1)
            crypto_failure("AES decrypt");
        done += static_cast<std::size_t>(chunk);
        written += static_cast<std::size_t>(l);
    }
    if (EVP_DecryptFinal_ex(ctx, out + written, &l) != 1) {
        OPENSSL_cleanse(out, written);
        // Authenticated but badly padded: forged by a key holder, or the wrong cipher key.
        throw Error(ErrorKind::InvalidToken, "invalid token: bad padding after authentication");
    }
    return written + static_cast<std::size_t>(l);
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
