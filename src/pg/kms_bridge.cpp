// Implements kms_bridge.h on the core's KMS providers.
#include "kms_bridge.h"

#include "bridge_guard.hpp"
#include "kms/provider.hpp"

#include <openssl/crypto.h>

#include <chrono>
#include <cstring>
#include <map>
#include <string>

namespace {

using conn_crypto::SecureBytes;
using conn_crypto::bridge::guarded;
using Clock = std::chrono::steady_clock;

conn_crypto::kms::KmsConfig to_core(const cc_kms_config* c) {
    conn_crypto::kms::KmsConfig k;
    k.conn_type = c->conn_type ? c->conn_type : "";
    k.host = c->host ? c->host : "";
    k.port = c->port;
    for (int i = 0; i < c->nparams; ++i) k.params[c->param_names[i]] = c->param_values[i] ? c->param_values[i] : "";
    k.connect_timeout_ms = c->connect_timeout_ms;
    k.read_timeout_ms = c->read_timeout_ms;
    if (c->interrupted) {
        bool (*fn)(void) = c->interrupted;
        k.interrupted = [fn] { return fn(); };
    }
    return k;
}

// Wipes the PEM text (client key) copied into a config's parameters.
void wipe(conn_crypto::kms::KmsConfig& k) {
    for (auto& [name, value] : k.params) OPENSSL_cleanse(value.data(), value.size());
}

// Unwrapped data keys by KMS connection and wrapped form: the ciphertext of
// an authenticated (GCM) or randomly initialised (CBC) wrap names one key.
struct CachedKey {
    SecureBytes key;
    Clock::time_point unwrapped_at;
};
std::map<std::string, CachedKey>& cache() {
    static std::map<std::string, CachedKey> entries;
    return entries;
}

void prefix_kms(cc_error* err, const char* kms_conn_id) {
    if (!err || err->status == CC_OK || !kms_conn_id) return;
    std::string message = std::string("KMS connection \"") + kms_conn_id + "\": " + err->message;
    std::snprintf(err->message, sizeof err->message, "%s", message.c_str());
}

// Runs f with the provider for config; the config's copy of the
// credentials is wiped afterwards, whatever happens.
template <class F>
void with_provider(const cc_kms_config* config, F&& f) {
    auto k = to_core(config);
    struct Wiper {
        conn_crypto::kms::KmsConfig& k;
        ~Wiper() { wipe(k); }
    } wiper{k};
    f(*conn_crypto::kms::make_provider(k));
}

}  // namespace

extern "C" {

bool cc_kms_wrap(const cc_kms_config* config, const uint8_t* plaintext, size_t n, char* out, size_t* out_len,
                 cc_error* err) {
    bool ok = guarded(
        err,
        [&] {
            with_provider(config, [&](conn_crypto::kms::KmsProvider& provider) {
                std::string wrapped = provider.wrap(plaintext, n);
                if (wrapped.size() > CC_KMS_WRAPPED_MAX)
                    throw conn_crypto::Error(conn_crypto::ErrorKind::TooLarge, "KMS wrapped key is too long");
                std::memcpy(out, wrapped.data(), wrapped.size());
                *out_len = wrapped.size();
            });
        },
        CC_ERR_KMS);
    prefix_kms(err, config->kms_conn_id);
    return ok;
}

bool cc_kms_unwrap(const cc_kms_config* config, const char* wrapped, size_t len, int cache_ttl_s, uint8_t* out,
                   size_t* out_len, cc_error* err) {
    bool ok = guarded(
        err,
        [&] {
            // Keyed by KMS connection too: a caller naming another KMS connection
            // is never served a key that connection could not unwrap itself.
            std::string id = std::string(config->kms_conn_id ? config->kms_conn_id : "") + '\0' + std::string(wrapped, len);
            if (cache_ttl_s > 0) {
                auto it = cache().find(id);
                if (it != cache().end() && Clock::now() - it->second.unwrapped_at < std::chrono::seconds(cache_ttl_s)) {
                    std::memcpy(out, it->second.key.data(), it->second.key.size());
                    *out_len = it->second.key.size();
                    return;
                }
            }
            SecureBytes key;
            with_provider(config, [&](conn_crypto::kms::KmsProvider& provider) {
                key = provider.unwrap(std::string_view(wrapped, len));
            });
            if (key.size() > CC_KMS_PLAINTEXT_MAX)
                throw conn_crypto::Error(conn_crypto::ErrorKind::TooLarge, "KMS unwrapped key is too long");
            std::memcpy(out, key.data(), key.size());
            *out_len = key.size();
            if (cache_ttl_s > 0) cache()[id] = CachedKey{std::move(key), Clock::now()};
        },
        CC_ERR_KMS);
    prefix_kms(err, config->kms_conn_id);
    return ok;
}

void cc_kms_cache_expire(int max_age_s) {
    auto& entries = cache();
    auto now = Clock::now();
    for (auto it = entries.begin(); it != entries.end();) {
        if (max_age_s < 0 || now - it->second.unwrapped_at >= std::chrono::seconds(max_age_s))
            it = entries.erase(it);  // SecureBytes wipes the key
        else
            ++it;
    }
}

int cc_kms_cache_size(void) { return static_cast<int>(cache().size()); }

}  // extern "C"
