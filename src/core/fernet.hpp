// One Fernet key, prepared once: its AES-128 key schedule and its keyed HMAC
// state live in OpenSSL contexts that every token reuses, so the per-token
// cost is the cipher and MAC work itself.
//
// Token layout (https://github.com/fernet/spec):
//   0x80 | timestamp (u64 big-endian seconds) | IV (16) | AES-128-CBC/PKCS7 | HMAC-SHA256 (32)
// url-safe base64 with '=' padding. Signing key = key[0..16), encryption key = key[16..32).
#pragma once
#include "no_postgres.hpp"
#include "secure_bytes.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

namespace conn_crypto {

namespace token_layout {
constexpr std::uint8_t kVersion = 0x80;
constexpr std::size_t kHeader = 1 + 8 + 16;  // version, timestamp, IV
constexpr std::size_t kMac = 32;
constexpr std::size_t kBlock = 16;
constexpr std::size_t kMinRaw = kHeader + kBlock + kMac;  // smallest valid token
constexpr std::int64_t kMaxClockSkew = 60;               // seconds, as cryptography
}  // namespace token_layout

constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kSigningBytes = 16;   // the first half of a key signs, the second encrypts
constexpr std::size_t kKeyChars = 44;  // base64 of 32 bytes, padded

// Length of the base64 token for a plaintext of n bytes; 0 on overflow.
std::size_t token_length(std::size_t plaintext_len) noexcept;

// Upper bound of the plaintext length of a token of n characters.
std::size_t plaintext_bound(std::size_t token_len) noexcept;

// The decoded bytes of a token. They are all public (version, timestamp, IV,
// ciphertext, MAC), so they are never wiped; tokens up to kInline bytes (about
// 1.3 KB of base64, far above typical secrets) stay off the heap.
class TokenBytes {
public:
    static constexpr std::size_t kInline = 1024;

    TokenBytes() noexcept {}  // user-provided: the inline buffer is never zeroed
    TokenBytes(const TokenBytes& o) { assign(o.data(), o.size_); }
    TokenBytes(TokenBytes&& o) noexcept { take(o); }
    TokenBytes& operator=(const TokenBytes& o) {
        if (this != &o) assign(o.data(), o.size_);
        return *this;
    }
    TokenBytes& operator=(TokenBytes&& o) noexcept {
        if (this != &o) take(o);
        return *this;
    }

    // Room for n bytes (previous contents are dropped); size() becomes n.
    // Throws std::bad_alloc only above kInline.
    std::uint8_t* reset(std::size_t n);
    // Shrinks to the first n bytes (n <= size()).
    void truncate(std::size_t n) noexcept { size_ = n; }

    std::uint8_t* data() noexcept { return heap_ ? heap_.get() : inline_; }
    const std::uint8_t* data() const noexcept { return heap_ ? heap_.get() : inline_; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::uint8_t& operator[](std::size_t i) noexcept { return data()[i]; }
    std::uint8_t operator[](std::size_t i) const noexcept { return data()[i]; }

private:
    void assign(const std::uint8_t* p, std::size_t n);
    void take(TokenBytes& o) noexcept;

    std::unique_ptr<std::uint8_t[]> heap_;  // only for tokens above kInline bytes
    std::size_t size_ = 0;
    std::uint8_t inline_[kInline];
};

// A token decoded and checked for structure only (not yet authenticated).
// Every field is validated before it is sliced: length, version, block multiple.
struct ParsedToken {
    TokenBytes raw;  // the decoded bytes
    std::uint64_t timestamp = 0;

    ParsedToken() noexcept {}  // user-provided: value-initialisation would zero raw

    const std::uint8_t* iv() const { return raw.data() + 9; }
    const std::uint8_t* ciphertext() const { return raw.data() + token_layout::kHeader; }
    std::size_t ciphertext_len() const { return raw.size() - token_layout::kHeader - token_layout::kMac; }
    const std::uint8_t* signed_data() const { return raw.data(); }
    std::size_t signed_len() const { return raw.size() - token_layout::kMac; }
    const std::uint8_t* mac() const { return raw.data() + raw.size() - token_layout::kMac; }
};

// Decodes and structurally validates a token; throws Error(MalformedToken).
ParsedToken parse_token(std::string_view token);

// The same without exceptions (checking plaintext is a hot path for the
// triggers): nullopt, with *why set to the reason, when malformed.
std::optional<ParsedToken> try_parse_token(std::string_view token, const char** why = nullptr) noexcept;

// A quick test on length and first character: true when the text cannot be
// a token at all (most plaintext), without decoding anything.
bool cannot_be_token(std::string_view token) noexcept;

// Same checks without throwing: whether the text has the structure of a token.
bool looks_like_token(std::string_view token) noexcept;

// Time check exactly as cryptography: only when a ttl is given; expired when
// ts + ttl < now, in the future when now + 60 < ts. Throws Error.
void check_token_time(std::uint64_t timestamp, std::int64_t ttl, std::int64_t now);

class FernetKey {
public:
    // key: exactly 32 raw bytes.
    explicit FernetKey(const std::uint8_t* key32);
    ~FernetKey();
    FernetKey(FernetKey&&) noexcept;
    FernetKey& operator=(FernetKey&&) noexcept;
    FernetKey(const FernetKey&) = delete;
    FernetKey& operator=(const FernetKey&) = delete;

    // Writes token_length(n) characters to out.
    void encrypt(const std::uint8_t* plaintext, std::size_t n, std::uint64_t timestamp,
                 const std::uint8_t iv[16], char* out) const;

    // Constant-time HMAC check of a parsed token.
    bool authenticates(const ParsedToken& token) const;

    // Decrypts an authenticated token into out (capacity >= ciphertext_len);
    // returns the plaintext length. Throws Error(InvalidToken) on bad padding.
    std::size_t decrypt_authenticated(const ParsedToken& token, std::uint8_t* out) const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

// Fills buf with n bytes from OpenSSL's CSPRNG; throws Error(Crypto).
void random_bytes(std::uint8_t* buf, std::size_t n);

// A fresh random IV (from a buffered CSPRNG pool, fork-safe); throws Error(Crypto).
void random_iv(std::uint8_t iv[16]);

// Current time in whole seconds since the epoch.
std::int64_t unix_now() noexcept;

}  // namespace conn_crypto
