// Error categories a user can act on. Messages never carry key material or
// plaintext: they are built only from fixed text and small numbers.
#pragma once
#include "no_postgres.hpp"

#include <stdexcept>
#include <string>

namespace conn_crypto {

enum class ErrorKind {
    MalformedToken,   // not a Fernet token at all (encoding, length, version)
    InvalidToken,     // well-formed, but no key authenticates it (wrong key or tampered)
    Expired,          // authenticated later; timestamp older than the ttl
    FutureTimestamp,  // timestamp too far ahead of the clock
    BadKey,           // a key of the keyring is not 32 base64-encoded bytes
    NoKey,            // empty keyring
    TooLarge,         // the result would exceed a size limit
    Crypto,           // OpenSSL failed (out of memory, provider missing)
};

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message)
        : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

}  // namespace conn_crypto
