// A small blocking-with-deadlines TLS 1.2+ client for talking to a KMS.
//
// - Credentials come from PEM text in memory (never temp files); the peer is
//   always verified: its chain against ca_cert only (the system trust store
//   is not used; any certificate in ca_cert is a trust anchor), and its
//   certificate against the host name or IP address connected to (or
//   server_name when given).
// - The socket is non-blocking; every wait is a poll() of at most 100 ms
//   after which the interrupt callback is asked whether to abort. TLS runs
//   over memory BIOs so that the socket I/O is ours: sends use MSG_NOSIGNAL
//   (no SIGPIPE), nothing blocks outside poll().
// - Host names are resolved with getaddrinfo, which blocks (bounded only by
//   the resolver's own timeouts); IP addresses never touch the resolver.
#pragma once
#include "../no_postgres.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace conn_crypto::kms {

// Client certificate, key and trust anchors, parsed once and shared by every
// connection made with them. Throws Error(BadKey) with a message naming the
// parameter (never its content) when the PEM does not load or the key does
// not match the certificate. client_cert may hold the chain after the leaf.
// The key must be unencrypted.
class TlsContext {
public:
    TlsContext(std::string_view client_cert_pem, std::string_view client_key_pem,
               std::string_view ca_cert_pem);
    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    struct Impl;
    const Impl& impl() const { return *impl_; }

private:
    std::unique_ptr<Impl> impl_;
};

struct TlsEndpoint {
    std::string host;         // DNS name or IP address
    int port = 0;
    std::string server_name;  // name or IP to verify instead of host; empty: host
    int connect_timeout_ms = 5000;
    int read_timeout_ms = 10000;
    std::function<bool()> interrupted;  // true: abort; may be empty
};

// One TLS connection: the constructor connects and completes the handshake.
// Errors: Error(Crypto) "KMS unreachable ...", "KMS timeout ...", "KMS TLS
// handshake failed ...", "KMS certificate rejected ...", "KMS request
// interrupted ...", "KMS connection closed ...".
class TlsConnection {
public:
    TlsConnection(const TlsContext& context, const TlsEndpoint& endpoint);
    ~TlsConnection();  // sends close_notify without waiting, closes the socket
    TlsConnection(const TlsConnection&) = delete;
    TlsConnection& operator=(const TlsConnection&) = delete;

    // Sends all n bytes within read_timeout_ms.
    void write_all(const std::uint8_t* data, std::size_t n);
    // Receives exactly n bytes, waiting at most read_timeout_ms in total.
    void read_exact(std::uint8_t* out, std::size_t n);

    // "host:port", for messages.
    const std::string& peer() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace conn_crypto::kms
