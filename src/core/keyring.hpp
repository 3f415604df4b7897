// A keyring behaves like cryptography's MultiFernet: comma-separated keys,
// the first encrypts, every key is tried to decrypt, and rotate re-encrypts
// under the first key keeping the token's original timestamp.
#pragma once
#include "no_postgres.hpp"
#include "fernet.hpp"
#include "token_memo.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conn_crypto {

// A keyring may hold at most this many keys: decryption tries each key in
// turn (one HMAC each), so the bound keeps the worst case bounded.
constexpr std::size_t kMaxKeys = 1000;

struct Decrypted {
    std::size_t length = 0;      // plaintext bytes written
    std::size_t key_index = 0;   // 0-based position of the key that authenticated
    std::uint64_t timestamp = 0;
};

// Not thread-safe, even through const methods: the token memo and the key
// hint change on every lookup (one keyring per backend or per thread).
class Keyring {
public:
    // Parses "k1,k2,...". Each key: url-safe or standard base64 of 32 bytes,
    // padding optional, whitespace around it ignored. Throws Error(BadKey)
    // naming the position ("key 2 of 3 ...") or Error(NoKey) when empty.
    static Keyring parse(std::string_view text);

    // Decodes one key; nullopt when it is not 32 base64-encoded bytes.
    static std::optional<SecureBytes> decode_key(std::string_view text);

    // A new random key, 44 characters of url-safe base64 (Fernet.generate_key()).
    static std::string generate_key();

    std::size_t size() const noexcept { return keys_.size(); }

    // Encrypts under the primary key into out (token_length(n) characters).
    // timestamp/iv default to now and fresh random bytes.
    void encrypt(const std::uint8_t* plaintext, std::size_t n, char* out,
                 std::optional<std::uint64_t> timestamp = std::nullopt,
                 const std::uint8_t* iv = nullptr) const;

    // Authenticates with the first key that accepts the token and decrypts
    // into out (capacity plaintext_bound(token.size())). ttl as cryptography.
    Decrypted decrypt(std::string_view token, std::uint8_t* out,
                      std::optional<std::int64_t> ttl = std::nullopt,
                      std::int64_t now = unix_now()) const;

    // Which key authenticates an already parsed token; nullopt if none.
    std::optional<std::size_t> authenticating_key(const ParsedToken& token) const;

    // 0-based index of the key authenticating the token; nullopt when the
    // token is malformed or no key authenticates it. Never throws on bad tokens.
    std::optional<std::size_t> key_index(std::string_view token) const;

    // Authenticated timestamp (no ttl check), as MultiFernet.extract_timestamp.
    std::uint64_t extract_timestamp(std::string_view token) const;

    // Re-encrypts under the primary key keeping the original timestamp; out
    // must hold plaintext_bound-derived token length: use rotate_bound().
    std::size_t rotate(std::string_view token, char* out) const;
    static std::size_t rotate_bound(std::size_t token_len) noexcept {
        return token_length(plaintext_bound(token_len));
    }

private:
    std::size_t decrypt_parsed(const ParsedToken& parsed, std::uint8_t* out, std::size_t* key_index,
                               bool* first_authenticating = nullptr) const;
    std::size_t decrypt_known(std::string_view token, const ParsedToken& parsed, std::uint8_t* out,
                              std::size_t* key_index) const;
    std::optional<std::size_t> authenticate(std::string_view token, const ParsedToken& parsed) const;

    std::vector<FernetKey> keys_;
    mutable TokenMemo memo_;   // tokens recently authenticated or produced, with their key
    // No two keys share a signing half, so at most one key authenticates any
    // token and the order keys are tried in cannot change the answer.
    bool distinct_signing_ = true;
    // The key that authenticated the last token: tried first when signing
    // halves are distinct (a table's old tokens are mostly under one key).
    mutable std::size_t hint_ = 0;
};

}  // namespace conn_crypto
