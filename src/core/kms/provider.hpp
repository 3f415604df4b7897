// Key Management Service providers for envelope encryption: a data key is
// wrapped (encrypted) by a key that never leaves the KMS, and the wrapped form
// is stored next to the data it protects.
//
// Every error is a conn_crypto::Error whose message starts with "KMS " and
// names the cause (unreachable, timeout, TLS handshake failed, certificate
// rejected, server error with reason and message, key not found, key not
// active, unwrap failed, interrupted). Kinds: BadKey for bad configuration,
// TooLarge when the wrapped form would not fit kMaxWrappedChars, Crypto for
// everything else. Messages never carry PEM material or key bytes.
//
// Calls block the calling thread on the network: one connection per call,
// bounded by connect_timeout_ms (TCP connect) and read_timeout_ms (the TLS
// handshake, each write and each read), and by the interrupt callback, which
// is polled at least every 100 ms while waiting.
#pragma once
#include "../no_postgres.hpp"
#include "../secure_bytes.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace conn_crypto::kms {

// Upper bound of a wrapped key's length: it is stored in a varchar(200).
constexpr std::size_t kMaxWrappedChars = 200;
// Largest plaintext a provider wraps (data keys are 32 bytes).
constexpr std::size_t kMaxWrapPlaintext = 64;

struct KmsConfig {
    std::string conn_type;  // selects the provider: "kmip"
    std::string host;       // DNS name or IP address of the KMS
    int port = 0;           // 0: the provider's default (KMIP: 5696)
    // Provider parameters, already parsed from the connection's JSON extra
    // into flat strings. KMIP: client_cert, client_key, ca_cert (PEM text),
    // key_id, kmip_version ("1.4" default, or "1.2"), and optionally
    // cipher_mode ("gcm"/"cbc") and server_name (see kmip_provider.hpp).
    std::map<std::string, std::string> params;
    int connect_timeout_ms = 5000;  // TCP connect, per address tried
    int read_timeout_ms = 10000;    // TLS handshake, each write, each read
    // Returns true when the caller wants to abort (e.g. a query cancel).
    // Called from the waiting loop at least every 100 ms; it must not throw
    // or longjmp (an exception escaping it is taken as "abort"). Empty: never.
    std::function<bool()> interrupted;
};

class KmsProvider {
public:
    virtual ~KmsProvider() = default;
    KmsProvider() = default;
    KmsProvider(const KmsProvider&) = delete;
    KmsProvider& operator=(const KmsProvider&) = delete;

    // The conn_type this provider serves, e.g. "kmip".
    virtual const char* conn_type() const noexcept = 0;

    // Encrypts 1..kMaxWrapPlaintext bytes under the configured KMS key and
    // returns printable ASCII ("<scheme><version>:" then url-safe base64) of
    // at most kMaxWrappedChars characters.
    std::string wrap(const std::uint8_t* plaintext, std::size_t n);
    std::string wrap(const SecureBytes& plaintext) { return wrap(plaintext.data(), plaintext.size()); }

    // Decrypts what wrap returned (possibly under another configuration of
    // the same KMS: the wrapped form names the key it needs).
    SecureBytes unwrap(std::string_view wrapped);

private:
    virtual std::string do_wrap(const std::uint8_t* plaintext, std::size_t n) = 0;
    virtual SecureBytes do_unwrap(std::string_view wrapped) = 0;
};

// Builds the provider for config.conn_type ("kmip"); validates the
// configuration (throws Error(BadKey) naming the problem, e.g. an unknown
// conn_type, a missing parameter or PEM that does not load). Does not
// contact the KMS.
std::unique_ptr<KmsProvider> make_provider(const KmsConfig& config);

}  // namespace conn_crypto::kms
