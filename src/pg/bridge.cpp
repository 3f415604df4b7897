// Implements bridge.h: each entry point runs the core inside one catch-all
// guard and reports failures as cc_error. Nothing here includes PostgreSQL.
#include "bridge.h"
#include "bridge_guard.hpp"

#include "errors.hpp"
#include "base64.hpp"
#include "keyring.hpp"

#include <openssl/crypto.h>

#include <cstring>
#include <new>
#include <string_view>

struct cc_keyring {
    conn_crypto::Keyring ring;
};

using conn_crypto::bridge::guarded;

extern "C" {

cc_keyring* cc_keyring_parse(const char* text, size_t len, cc_error* err) {
    cc_keyring* result = nullptr;
    guarded(err, [&] { result = new cc_keyring{conn_crypto::Keyring::parse(std::string_view(text, len))}; });
    return result;
}

void cc_keyring_free(cc_keyring* ring) { delete ring; }

int cc_keyring_size(const cc_keyring* ring) { return static_cast<int>(ring->ring.size()); }

size_t cc_token_length(size_t n) { return conn_crypto::token_length(n); }
size_t cc_plaintext_bound(size_t n) { return conn_crypto::plaintext_bound(n); }
size_t cc_rotate_bound(size_t n) { return conn_crypto::Keyring::rotate_bound(n); }

bool cc_encrypt(const cc_keyring* ring, const uint8_t* pt, size_t n, char* out, cc_error* err) {
    return guarded(err, [&] { ring->ring.encrypt(pt, n, out); });
}

bool cc_encrypt_at(const cc_keyring* ring, const uint8_t* pt, size_t n, uint64_t timestamp, char* out,
                   cc_error* err) {
    return guarded(err, [&] { ring->ring.encrypt(pt, n, out, timestamp); });
}

bool cc_decrypt(const cc_keyring* ring, const char* token, size_t len, bool has_ttl, int64_t ttl, uint8_t* out,
                size_t* out_len, int* key_index, uint64_t* timestamp, cc_error* err) {
    return guarded(err, [&] {
        std::optional<std::int64_t> t;
        if (has_ttl) t = ttl;
        conn_crypto::Decrypted d = ring->ring.decrypt(std::string_view(token, len), out, t);
        *out_len = d.length;
        if (key_index) *key_index = static_cast<int>(d.key_index);
        if (timestamp) *timestamp = d.timestamp;
    });
}

int cc_key_index(const cc_keyring* ring, const char* token, size_t len, cc_error* err) {
    int result = -2;
    guarded(err, [&] {
        auto idx = ring->ring.key_index(std::string_view(token, len));
        result = idx ? static_cast<int>(*idx) : -1;
    });
    return result;
}

bool cc_rotate(const cc_keyring* ring, const char* token, size_t len, char* out, size_t* out_len,
               cc_error* err) {
    return guarded(err, [&] { *out_len = ring->ring.rotate(std::string_view(token, len), out); });
}

bool cc_extract_timestamp(const cc_keyring* ring, const char* token, size_t len, uint64_t* timestamp,
                          cc_error* err) {
    return guarded(err, [&] { *timestamp = ring->ring.extract_timestamp(std::string_view(token, len)); });
}

bool cc_looks_like_token(const char* token, size_t len) {
    return conn_crypto::looks_like_token(std::string_view(token, len));
}

bool cc_random_bytes(uint8_t* out, size_t n, cc_error* err) {
    return guarded(err, [&] { conn_crypto::random_bytes(out, n); });
}

bool cc_generate_key(char* out44, cc_error* err) {
    return guarded(err, [&] {
        std::string k = conn_crypto::Keyring::generate_key();
        std::memcpy(out44, k.data(), conn_crypto::kKeyChars);
        OPENSSL_cleanse(k.data(), k.size());
    });
}

void cc_wipe(void* p, size_t n) { OPENSSL_cleanse(p, n); }

cc_keyring* cc_keyring_from_raw(const uint8_t* key32, cc_error* err) {
    cc_keyring* result = nullptr;
    guarded(err, [&] {
        std::string text(conn_crypto::kKeyChars, '\0');
        conn_crypto::base64::encode_urlsafe(key32, conn_crypto::kKeyBytes, text.data());
        result = new cc_keyring{conn_crypto::Keyring::parse(text)};
        OPENSSL_cleanse(text.data(), text.size());
    });
    return result;
}

}  // extern "C"
