#include "tls_client.hpp"

#include "../errors.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>

namespace conn_crypto::kms {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPollSliceMs = 100;
constexpr std::size_t kIoChunk = 16384;

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::Crypto, message); }
[[noreturn]] void bad_config(const std::string& message) { throw Error(ErrorKind::BadKey, message); }

// The reason text of the most relevant queued OpenSSL error; clears the queue
// so nothing is left behind for other OpenSSL users in the process.
std::string drain_openssl_errors(unsigned long* first_code = nullptr) {
    unsigned long code = 0, e;
    while ((e = ERR_get_error()) != 0)
        if (code == 0) code = e;
    if (first_code) *first_code = code;
    if (code == 0) return "unknown error";
    const char* reason = ERR_reason_error_string(code);
    return reason ? reason : "error code " + std::to_string(code);
}

struct BioFree {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

BioPtr mem_bio(std::string_view pem, const char* what) {
    if (pem.size() > INT_MAX) bad_config(std::string("KMS configuration: ") + what + " is too large");
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) fail("KMS out of memory while loading TLS credentials");
    return bio;
}

// Refuses to prompt on a terminal for a pass phrase: encrypted keys fail.
int no_password(char*, int, int, void*) { return -1; }

bool is_ip_literal(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

// ---------------------------------------------------------------------------
struct TlsContext::Impl {
    SSL_CTX* ctx = nullptr;
    ~Impl() { SSL_CTX_free(ctx); }
};

TlsContext::TlsContext(std::string_view client_cert_pem, std::string_view client_key_pem,
                       std::string_view ca_cert_pem)
    : impl_(std::make_unique<Impl>()) {
    ERR_clear_error();
    SSL_CTX* ctx = SSL_CTX_new_ex(nullptr, nullptr, TLS_client_method());
    if (!ctx) fail("KMS cannot create a TLS context: " + drain_openssl_errors());
    impl_->ctx = ctx;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        fail("KMS cannot require TLS 1.2: " + drain_openssl_errors());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);

    // Trust anchors: exactly the certificates of ca_cert.
    {
        X509_STORE* store = SSL_CTX_get_cert_store(ctx);
        BioPtr bio = mem_bio(ca_cert_pem, "ca_cert");
        int count = 0;
        while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr)) {
            int ok = X509_STORE_add_cert(store, cert);
            X509_free(cert);
            if (ok != 1) fail("KMS cannot add a ca_cert certificate to the trust store: " + drain_openssl_errors());
            ++count;
        }
        ERR_clear_error();  // the loop ends with a "no start line" error
        if (count == 0) bad_config("KMS configuration: ca_cert holds no PEM certificate");
        // Any certificate given is a trust anchor, even an intermediate.
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    }

    // Client certificate (leaf first, then its chain) and key.
    {
        BioPtr bio = mem_bio(client_cert_pem, "client_cert");
        X509* leaf = PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr);
        if (!leaf) {
            drain_openssl_errors();
            bad_config("KMS configuration: client_cert holds no PEM certificate");
        }
        int ok = SSL_CTX_use_certificate(ctx, leaf);
        X509_free(leaf);
        if (ok != 1) bad_config("KMS configuration: client_cert is not usable: " + drain_openssl_errors());
        while (X509* extra = PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr)) {
            if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
                X509_free(extra);
                fail("KMS cannot add a client_cert chain certificate: " + drain_openssl_errors());
            }
        }
        ERR_clear_error();
    }
    {
        BioPtr bio = mem_bio(client_key_pem, "client_key");
        EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr);
        if (!key) {
            drain_openssl_errors();
            bad_config("KMS configuration: client_key is not an unencrypted PEM private key");
        }
        int ok = SSL_CTX_use_PrivateKey(ctx, key);
        EVP_PKEY_free(key);
        if (ok != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            drain_openssl_errors();
            bad_config("KMS configuration: client_key does not match client_cert");
        }
    }
    ERR_clear_error();
}

TlsContext::~TlsContext() = default;

// ---------------------------------------------------------------------------
struct TlsConnection::Impl {
    TlsEndpoint ep;
    std::string peer;
    Fd sock;
    SSL* ssl = nullptr;
    BIO* rbio = nullptr;  // owned by ssl
    BIO* wbio = nullptr;  // owned by ssl
    bool broken = false;  // no close_notify after a failure

    ~Impl() {
        if (ssl) {
            if (!broken && sock.fd >= 0) {
                ERR_clear_error();
                SSL_shutdown(ssl);  // queues close_notify in wbio
                flush_nowait();
            }
            SSL_free(ssl);
        }
        ERR_clear_error();
    }

    bool interrupted() const noexcept {
        if (!ep.interrupted) return false;
        try {
            return ep.interrupted();
        } catch (...) {
            return true;
        }
    }

    static Clock::time_point deadline_after(int ms) { return Clock::now() + std::chrono::milliseconds(ms); }

    // Waits until fd is ready for `events`, in slices of at most 100 ms,
    // checking the interrupt callback before each slice.
    void wait(short events, Clock::time_point deadline, int timeout_ms, const char* phase, bool connecting) {
        for (;;) {
            if (interrupted()) {
                broken = true;
                fail(std::string("KMS request interrupted ") + phase + " " + peer);
            }
            auto now = Clock::now();
            if (now >= deadline) {
                broken = true;
                if (connecting)
                    fail("KMS unreachable: connecting to " + peer + " timed out after " +
                         std::to_string(timeout_ms) + " ms");
                fail("KMS timeout: no answer within " + std::to_string(timeout_ms) + " ms " + phase + " " + peer);
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
            int slice = static_cast<int>(std::min<long long>(left, kPollSliceMs));
            pollfd p{sock.fd, events, 0};
            int r = ::poll(&p, 1, slice);
            if (r > 0) return;  // ready, or an error/hangup the next call reports
            if (r < 0 && errno != EINTR) {
                broken = true;
                fail(std::string("KMS poll failed ") + phase + " " + peer + ": " + std::strerror(errno));
            }
        }
    }

    void connect_tcp() {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_protocol = IPPROTO_TCP;
        hints.ai_flags = AI_NUMERICSERV | (is_ip_literal(ep.host) ? AI_NUMERICHOST : 0);
        addrinfo* res = nullptr;
        std::string port = std::to_string(ep.port);
        int rc = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res);
        if (rc != 0) fail("KMS unreachable: cannot resolve host '" + ep.host + "': " + gai_strerror(rc));
        std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);

        std::string last = "no address";
        for (addrinfo* ai = res; ai; ai = ai->ai_next) {
            Fd fd;
            fd.fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
            if (fd.fd < 0) {
                last = std::strerror(errno);
                continue;
            }
            int r = ::connect(fd.fd, ai->ai_addr, ai->ai_addrlen);
            if (r != 0 && errno != EINPROGRESS) {
                last = std::strerror(errno);
                continue;
            }
            if (r != 0) {
                std::swap(sock.fd, fd.fd);  // wait() polls sock.fd
                wait(POLLOUT, deadline_after(ep.connect_timeout_ms), ep.connect_timeout_ms, "while connecting to",
                     true);
                std::swap(sock.fd, fd.fd);
                int err = 0;
                socklen_t len = sizeof err;
                if (::getsockopt(fd.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
                if (err != 0) {
                    last = std::strerror(err);
                    continue;
                }
            }
            int one = 1;
            ::setsockopt(fd.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            std::swap(sock.fd, fd.fd);
            return;
        }
        fail("KMS unreachable: cannot connect to " + peer + ": " + last);
    }

    // Sends everything OpenSSL queued in wbio.
    void flush(Clock::time_point deadline, const char* phase) {
        std::uint8_t buf[kIoChunk];
        while (BIO_ctrl_pending(wbio) > 0) {
            int n = BIO_read(wbio, buf, sizeof buf);
            if (n <= 0) break;
            std::size_t off = 0;
            while (off < static_cast<std::size_t>(n)) {
                ssize_t s = ::send(sock.fd, buf + off, static_cast<std::size_t>(n) - off, MSG_NOSIGNAL);
                if (s > 0) {
                    off += static_cast<std::size_t>(s);
                } else if (s < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    wait(POLLOUT, deadline, ep.read_timeout_ms, phase, false);
                } else if (s < 0 && errno == EINTR) {
                    continue;
                } else {
                    broken = true;
                    fail(std::string("KMS connection lost ") + phase + " " + peer + ": " + std::strerror(errno));
                }
            }
        }
    }

    // Best effort at close: one non-blocking send of whatever is queued.
    void flush_nowait() noexcept {
        std::uint8_t buf[512];
        int n = BIO_read(wbio, buf, sizeof buf);
        if (n > 0) (void)::send(sock.fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
    }

    // Receives what the socket has into rbio, waiting for it.
    void fill(Clock::time_point deadline, const char* phase, bool handshake) {
        std::uint8_t buf[kIoChunk];
        for (;;) {
            ssize_t r = ::recv(sock.fd, buf, sizeof buf, 0);
            if (r > 0) {
                if (BIO_write(rbio, buf, static_cast<int>(r)) != static_cast<int>(r)) {
                    broken = true;
                    fail("KMS out of memory while receiving from " + peer);
                }
                return;
            }
            if (r == 0) {
                broken = true;
                if (handshake)
                    fail("KMS TLS handshake failed: " + peer +
                         " closed the connection (it may have rejected the client certificate)");
                fail(std::string("KMS connection closed ") + phase + " " + peer);
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                wait(POLLIN, deadline, ep.read_timeout_ms, phase, false);
                continue;
            }
            broken = true;
            if (handshake) fail("KMS TLS handshake failed: connection to " + peer + " lost: " + std::strerror(errno));
            fail(std::string("KMS connection lost ") + phase + " " + peer + ": " + std::strerror(errno));
        }
    }

    [[noreturn]] void ssl_failure(int err, const char* phase, bool handshake) {
        broken = true;
        unsigned long code = 0;
        std::string reason = drain_openssl_errors(&code);
        long verify = SSL_get_verify_result(ssl);
        if (handshake && verify != X509_V_OK)
            fail("KMS TLS handshake failed: server certificate rejected for " + peer + ": " +
                 X509_verify_cert_error_string(verify));
        if (code != 0 && ERR_GET_LIB(code) == ERR_LIB_SSL) {
            switch (ERR_GET_REASON(code)) {
                case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
                case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
                case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
                case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
                case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
                case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
                case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
                case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
                    fail("KMS certificate rejected: " + peer + " refused the client certificate (TLS alert: " +
                         reason + ")");
                default:
                    break;
            }
        }
        if (err == SSL_ERROR_ZERO_RETURN) fail(std::string("KMS connection closed ") + phase + " " + peer);
        if (handshake) fail("KMS TLS handshake failed with " + peer + ": " + reason);
        fail("KMS TLS error " + std::string(phase) + " " + peer + ": " + reason);
    }

    // Runs an SSL operation to completion over the memory BIOs.
    template <class Op>
    int drive(Op op, Clock::time_point deadline, const char* phase, bool handshake) {
        for (;;) {
            ERR_clear_error();
            int r = op();
            int err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
            if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                flush_nowait();  // e.g. our alert; the failure is what matters
                ssl_failure(err, phase, handshake);
            }
            flush(deadline, phase);
            if (err == SSL_ERROR_NONE) return r;
            if (err == SSL_ERROR_WANT_READ) fill(deadline, phase, handshake);
            // SSL_ERROR_WANT_WRITE: the memory BIO was flushed above; retry.
        }
    }

    void handshake(const TlsContext& ctx) {
        ERR_clear_error();
        ssl = SSL_new(ctx.impl().ctx);
        if (!ssl) fail("KMS cannot create a TLS session: " + drain_openssl_errors());
        rbio = BIO_new(BIO_s_mem());
        wbio = BIO_new(BIO_s_mem());
        if (!rbio || !wbio) {
            BIO_free(rbio);
            BIO_free(wbio);
            rbio = wbio = nullptr;
            fail("KMS out of memory");
        }
        BIO_set_mem_eof_return(rbio, -1);  // empty means "want read", not EOF
        SSL_set_bio(ssl, rbio, wbio);
        SSL_set_connect_state(ssl);

        const std::string& name = ep.server_name.empty() ? ep.host : ep.server_name;
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        if (is_ip_literal(name)) {
            if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1)
                bad_config("KMS configuration: cannot verify against IP address '" + name + "'");
        } else {
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size()) != 1)
                bad_config("KMS configuration: cannot verify against host name '" + name + "'");
            SSL_set_tlsext_host_name(ssl, name.c_str());
        }
        drive([&] { return SSL_connect(ssl); }, deadline_after(ep.read_timeout_ms), "during the TLS handshake with",
              true);
    }
};

TlsConnection::TlsConnection(const TlsContext& context, const TlsEndpoint& endpoint)
    : impl_(std::make_unique<Impl>()) {
    impl_->ep = endpoint;
    impl_->peer = (endpoint.host.find(':') != std::string::npos ? "[" + endpoint.host + "]" : endpoint.host) + ":" +
                  std::to_string(endpoint.port);
    impl_->connect_tcp();
    impl_->handshake(context);
}

TlsConnection::~TlsConnection() = default;

const std::string& TlsConnection::peer() const noexcept { return impl_->peer; }

void TlsConnection::write_all(const std::uint8_t* data, std::size_t n) {
    auto deadline = Impl::deadline_after(impl_->ep.read_timeout_ms);
    std::size_t off = 0;
    while (off < n) {
        int chunk = static_cast<int>(std::min<std::size_t>(n - off, kIoChunk));
        int w = impl_->drive([&] { return SSL_write(impl_->ssl, data + off, chunk); }, deadline,
                             "while sending the request to", false);
        off += static_cast<std::size_t>(w);
    }
}

void TlsConnection::read_exact(std::uint8_t* out, std::size_t n) {
    auto deadline = Impl::deadline_after(impl_->ep.read_timeout_ms);
    std::size_t off = 0;
    while (off < n) {
        int chunk = static_cast<int>(std::min<std::size_t>(n - off, kIoChunk));
        int r = impl_->drive([&] { return SSL_read(impl_->ssl, out + off, chunk); }, deadline,
                             "while reading the response from", false);
        off += static_cast<std::size_t>(r);
    }
}

}  // namespace conn_crypto::kms
