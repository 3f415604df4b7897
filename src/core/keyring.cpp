#include "keyring.hpp"

#include "base64.hpp"
#include "errors.hpp"

#include <openssl/crypto.h>

#include <cstring>

namespace conn_crypto {

namespace {

[[noreturn]] void throw_no_key() {
    throw Error(ErrorKind::InvalidToken, "invalid token: no key of the keyring authenticates it (wrong key or tampered token)");
}

// An authenticated token's plaintext length under key, or nullopt when the
// cipher half rejects it (bad padding: a key sharing another's signing half).
std::optional<std::size_t> decrypt_with(const FernetKey& key, const ParsedToken& token, std::uint8_t* out) {
    try {
        return key.decrypt_authenticated(token, out);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::InvalidToken) throw;
        return std::nullopt;
    }
}

}  // namespace

std::optional<SecureBytes> Keyring::decode_key(std::string_view text) {
    text = base64::trim(text);
    if (text.size() < kKeyChars - 1 || text.size() > kKeyChars) return std::nullopt;
    SecureBytes raw(base64::decoded_bound(text.size()));
    auto n = base64::decode(text, base64::Alphabet::UrlSafeOrStd, raw.data());
    if (!n || *n != kKeyBytes) return std::nullopt;
    raw.resize(kKeyBytes);
    return raw;
}

Keyring Keyring::parse(std::string_view text) {
    if (base64::trim(text).empty())
        throw Error(ErrorKind::NoKey, "the keyring is empty");
    // Count first so the error can say "key i of n".
    std::size_t total = 1;
    for (char c : text) total += (c == ',');
    if (total > kMaxKeys)
        throw Error(ErrorKind::BadKey, "the keyring has " + std::to_string(total) +
                                           " keys; at most " + std::to_string(kMaxKeys) + " are allowed");
    Keyring ring;
    ring.keys_.reserve(total);
    // Signing halves (bytes 0-15) seen so far, wiped on the way out.
    SecureBytes signing(total * kSigningBytes);
    std::size_t index = 0;
    while (true) {
        std::size_t comma = text.find(',');
        std::string_view item = text.substr(0, comma);
        ++index;
        auto key = decode_key(item);
        if (!key)
            throw Error(ErrorKind::BadKey, "key " + std::to_string(index) + " of " + std::to_string(total) +
                                               " is not 32 url-safe base64-encoded bytes");
        ring.keys_.emplace_back(key->data());
        std::uint8_t* half = signing.data() + (index - 1) * kSigningBytes;
        std::memcpy(half, key->data(), kSigningBytes);
        for (std::size_t j = 0; j + 1 < index && ring.distinct_signing_; ++j)
            if (std::memcmp(signing.data() + j * kSigningBytes, half, kSigningBytes) == 0)
                ring.distinct_signing_ = false;
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    return ring;
}

std::string Keyring::generate_key() {
    SecureBytes raw(kKeyBytes);
    random_bytes(raw.data(), raw.size());
    std::string out(kKeyChars, '\0');
    base64::encode_urlsafe(raw.data(), raw.size(), out.data());
    return out;
}

void Keyring::encrypt(const std::uint8_t* plaintext, std::size_t n, char* out,
                      std::optional<std::uint64_t> timestamp, const std::uint8_t* iv) const {
    if (keys_.empty()) throw Error(ErrorKind::NoKey, "the keyring is empty");
    std::uint8_t fresh_iv[16];
    if (!iv) {
        random_iv(fresh_iv);
        iv = fresh_iv;
    }
    std::uint64_t ts = timestamp ? *timestamp : static_cast<std::uint64_t>(unix_now());
    keys_.front().encrypt(plaintext, n, ts, iv, out);
    memo_.remember(std::string_view(out, token_length(n)), 0);
}

std::optional<std::size_t> Keyring::authenticating_key(const ParsedToken& token) const {
    if (!distinct_signing_) {
        for (std::size_t i = 0; i < keys_.size(); ++i)
            if (keys_[i].authenticates(token)) return i;
        return std::nullopt;
    }
    // At most one key authenticates: the last one that did goes first.
    if (hint_ < keys_.size() && keys_[hint_].authenticates(token)) return hint_;
    for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (i == hint_ || !keys_[i].authenticates(token)) continue;
        hint_ = i;
        return i;
    }
    return std::nullopt;
}

// Like MultiFernet: every key is tried in order, and a key whose MAC matches
// but whose cipher half fails (two keys sharing a signing half) does not end
// the search.
std::size_t Keyring::decrypt_parsed(const ParsedToken& parsed, std::uint8_t* out, std::size_t* key_index,
                                    bool* first_authenticating) const {
    if (distinct_signing_) {
        // Only one key can authenticate it, so only that key can decrypt it.
        auto index = authenticating_key(parsed);
        std::optional<std::size_t> n;
        if (!index || !(n = decrypt_with(keys_[*index], parsed, out))) throw_no_key();
        if (key_index) *key_index = *index;
        if (first_authenticating) *first_authenticating = true;
        return *n;
    }
    bool first = true;
    for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (!keys_[i].authenticates(parsed)) continue;
        if (auto n = decrypt_with(keys_[i], parsed, out)) {
            if (key_index) *key_index = i;
            if (first_authenticating) *first_authenticating = first;
            return *n;
        }
        first = false;
    }
    throw_no_key();
}

// decrypt_parsed, skipping the HMAC when the memo already knows the token's key.
std::size_t Keyring::decrypt_known(std::string_view token, const ParsedToken& parsed, std::uint8_t* out,
                                   std::size_t* key_index) const {
    if (auto known = memo_.find(token); known && *known < keys_.size()) {
        if (auto n = decrypt_with(keys_[*known], parsed, out)) {
            if (key_index) *key_index = *known;
            return *n;
        }
    }
    std::size_t index = 0;
    bool first = false;
    std::size_t n = decrypt_parsed(parsed, out, &index, &first);
    // The memo answers key_index(): the first key whose MAC matches.
    if (first) memo_.remember(token, index);
    if (key_index) *key_index = index;
    return n;
}

Decrypted Keyring::decrypt(std::string_view token, std::uint8_t* out, std::optional<std::int64_t> ttl,
                           std::int64_t now) const {
    ParsedToken parsed = parse_token(token);
    // The spec orders the time check before the signature check.
    if (ttl) check_token_time(parsed.timestamp, *ttl, now);
    Decrypted d;
    d.timestamp = parsed.timestamp;
    d.length = decrypt_known(token, parsed, out, &d.key_index);
    return d;
}

// authenticating_key for a token the memo did not know; remembers the answer.
std::optional<std::size_t> Keyring::authenticate(std::string_view token, const ParsedToken& parsed) const {
    auto index = authenticating_key(parsed);
    if (index) memo_.remember(token, *index);
    return index;
}

std::optional<std::size_t> Keyring::key_index(std::string_view token) const {
    if (auto known = memo_.find(token)) return known;
    if (cannot_be_token(token)) return std::nullopt;
    auto parsed = try_parse_token(token);
    if (!parsed) return std::nullopt;
    return authenticate(token, *parsed);
}

std::uint64_t Keyring::extract_timestamp(std::string_view token) const {
    ParsedToken parsed = parse_token(token);
    if (!memo_.find(token) && !authenticate(token, parsed)) throw_no_key();
    return parsed.timestamp;
}

std::size_t Keyring::rotate(std::string_view token, char* out) const {
    ParsedToken parsed = parse_token(token);
    // Small values (nearly all connection secrets) stay off the heap.
    std::uint8_t small[1024];
    SecureBytes large(parsed.ciphertext_len() > sizeof small ? parsed.ciphertext_len() : 0);
    std::uint8_t* plain = large.empty() ? small : large.data();
    std::size_t n = 0;
    try {
        n = decrypt_known(token, parsed, plain, nullptr);
        encrypt(plain, n, out, parsed.timestamp);
    } catch (...) {
        OPENSSL_cleanse(small, sizeof small);
        throw;
    }
    OPENSSL_cleanse(plain, n);
    return token_length(n);
}

}  // namespace conn_crypto
