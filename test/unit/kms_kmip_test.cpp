// KMIP provider without a server: the wrapped-key format and its length,
// request layout, response parsing and error mapping, configuration checks,
// and the network failure modes that need only a loopback socket (refused
// connection, a peer that never answers, the interrupt callback).
#include "errors.hpp"
#include "kms/kmip_provider.hpp"
#include "kms/provider.hpp"
#include "kms/ttlv.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

using namespace conn_crypto;
using namespace conn_crypto::kms;
using conn_crypto::kms::ttlv::Item;
using conn_crypto::kms::ttlv::Type;
namespace tag = conn_crypto::kms::kmip::tag;

namespace {

const std::string kUuid = "1f0e6c9a-3b4d-4e5f-8a9b-0c1d2e3f4a5b";

kmip::WrappedKey sample(kmip::Mode mode, const std::string& key_id, std::size_t plaintext_len) {
    kmip::WrappedKey w;
    w.mode = mode;
    w.key_id = key_id;
    w.iv.assign(mode == kmip::Mode::Gcm ? 12 : 16, 0xA5);
    if (mode == kmip::Mode::Gcm) w.tag.assign(16, 0x3C);
    w.ciphertext.assign(mode == kmip::Mode::Gcm ? plaintext_len : (plaintext_len / 16 + 1) * 16, 0xFF);
    return w;
}

std::string error_of(const std::function<void()>& f, ErrorKind* kind = nullptr) {
    try {
        f();
    } catch (const Error& e) {
        if (kind) *kind = e.kind();
        return e.what();
    }
    return "<no error>";
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

Item response(std::uint32_t op, std::uint32_t status, std::optional<std::uint32_t> reason, const std::string& message,
              std::vector<Item> payload = {}) {
    std::vector<Item> batch;
    batch.push_back(Item::enumeration(tag::kOperation, op));
    batch.push_back(Item::enumeration(tag::kResultStatus, status));
    if (reason) batch.push_back(Item::enumeration(tag::kResultReason, *reason));
    if (!message.empty()) batch.push_back(Item::text_string(tag::kResultMessage, message));
    if (status == kmip::kStatusSuccess) batch.push_back(Item::structure(tag::kResponsePayload, std::move(payload)));
    Item header = Item::structure(tag::kResponseHeader,
                                  {Item::structure(tag::kProtocolVersion, {Item::integer(tag::kProtocolVersionMajor, 1),
                                                                          Item::integer(tag::kProtocolVersionMinor, 4)}),
                                   Item::date_time(tag::kTimeStamp, 1700000000), Item::integer(tag::kBatchCount, 1)});
    Item msg = Item::structure(tag::kResponseMessage, {header, Item::structure(tag::kBatchItem, std::move(batch))});
    // Through the wire format, as the provider sees it.
    SecureBytes wire = ttlv::encode(msg);
    return ttlv::decode(wire.data(), wire.size());
}

std::string failure(std::uint32_t op, std::optional<std::uint32_t> reason, const std::string& message) {
    Item r = response(op, kmip::kStatusFailed, reason, message);
    return error_of([&] { kmip::response_payload(r, op, "7"); });
}

struct Pem {
    std::string cert, key;
};

// A self-signed P-256 certificate, for configurations that must load.
Pem self_signed(const char* cn) {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_sign(x, key, EVP_sha256());
    auto to_string = [](BIO* b) {
        char* p = nullptr;
        long n = BIO_get_mem_data(b, &p);
        std::string s(p, static_cast<std::size_t>(n));
        BIO_free(b);
        return s;
    };
    BIO* cb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    BIO* kb = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(kb, key, nullptr, nullptr, 0, nullptr, nullptr);
    Pem out{to_string(cb), to_string(kb)};
    X509_free(x);
    EVP_PKEY_free(key);
    return out;
}

const Pem& test_pem() {
    static Pem pem = self_signed("conn_crypto unit test");
    return pem;
}

KmsConfig config(int port = 5696) {
    KmsConfig c;
    c.conn_type = "kmip";
    c.host = "127.0.0.1";
    c.port = port;
    c.params["client_cert"] = test_pem().cert;
    c.params["client_key"] = test_pem().key;
    c.params["ca_cert"] = test_pem().cert;
    c.params["key_id"] = "1";
    return c;
}

// A loopback socket that is bound and listening but never accepts: TCP
// connects complete (the kernel's backlog) and then nothing ever answers.
struct Blackhole {
    int fd = -1;
    int port = 0;
    explicit Blackhole(int backlog = 16) {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("bind");
        if (::listen(fd, backlog) != 0) throw std::runtime_error("listen");
        socklen_t len = sizeof a;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
    }
    ~Blackhole() { ::close(fd); }
};

// A port nothing listens on (bound, then closed).
int closed_port() {
    Blackhole b;
    int port = b.port;
    return port;
}

using Ms = std::chrono::milliseconds;
template <class F>
long long elapsed_ms(F f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// --- Wrapped format ------------------------------------------------------------

TEST(KmsKmip, WrappedLengthFitsVarchar200ForA32ByteKey) {
    for (auto mode : {kmip::Mode::Gcm, kmip::Mode::Cbc}) {
        for (const std::string& id : {std::string("1"), kUuid}) {
            std::string s = kmip::encode_wrapped(sample(mode, id, 32));
            EXPECT_EQ(s.size(), kmip::wrapped_length(mode, id.size(), 32));
            EXPECT_LE(s.size(), kMaxWrappedChars);
            EXPECT_TRUE(starts_with(s, "kmip1:"));
            for (char c : s) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':') << s;
        }
    }
    EXPECT_EQ(kmip::wrapped_length(kmip::Mode::Gcm, 36, 32), 137u);
    EXPECT_EQ(kmip::wrapped_length(kmip::Mode::Cbc, 36, 32), 142u);
    // The longest key ids that still fit.
    EXPECT_LE(kmip::wrapped_length(kmip::Mode::Gcm, 83, 32), 200u);
    EXPECT_GT(kmip::wrapped_length(kmip::Mode::Gcm, 84, 32), 200u);
    EXPECT_LE(kmip::wrapped_length(kmip::Mode::Cbc, 79, 32), 200u);
    EXPECT_GT(kmip::wrapped_length(kmip::Mode::Cbc, 80, 32), 200u);
}

TEST(KmsKmip, WrappedRoundTrip) {
    for (auto mode : {kmip::Mode::Gcm, kmip::Mode::Cbc}) {
        for (std::size_t n : {1u, 16u, 32u, 64u}) {
            kmip::WrappedKey w = sample(mode, kUuid, n);
            w.ciphertext[0] = 0x01;
            kmip::WrappedKey d = kmip::decode_wrapped(kmip::encode_wrapped(w));
            EXPECT_EQ(d.mode, w.mode);
            EXPECT_EQ(d.key_id, w.key_id);
            EXPECT_EQ(d.iv, w.iv);
            EXPECT_EQ(d.tag, w.tag);
            EXPECT_EQ(d.ciphertext, w.ciphertext);
        }
    }
}

TEST(KmsKmip, KnownWrappedLayout) {
    kmip::WrappedKey w;
    w.mode = kmip::Mode::Gcm;
    w.key_id = "7";
    w.iv.assign(12, 0);
    w.tag.assign(16, 0);
    w.ciphertext = {0xFB, 0xFF};
    // 01 01 '7' 00*12 00*16 FB FF = 33 bytes -> 44 base64 characters.
    EXPECT_EQ(kmip::encode_wrapped(w), "kmip1:AQE3AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAPv_");
}

TEST(KmsKmip, DecodeWrappedRejectsMalformed) {
    std::string good = kmip::encode_wrapped(sample(kmip::Mode::Cbc, "1", 32));
    auto err = [](const std::string& s) { return error_of([&] { kmip::decode_wrapped(s); }); };
    for (const std::string& bad :
         {std::string(""), std::string("kmip2:AAAA"), std::string("aws1:AAAA"), std::string("kmip1:"),
          std::string("kmip1:A"), std::string("kmip1:@@@@"), good.substr(0, good.size() - 4),
          kmip::encode_wrapped(sample(kmip::Mode::Cbc, "1", 32)) + "AAAA" /* not whole blocks */}) {
        std::string m = err(bad);
        EXPECT_TRUE(starts_with(m, "KMS unwrap failed: malformed wrapped key")) << bad << " -> " << m;
    }
    // Unknown mode byte, zero-length key id.
    EXPECT_TRUE(starts_with(err("kmip1:AwE3" + std::string(60, 'A')), "KMS unwrap failed"));
    EXPECT_TRUE(starts_with(err("kmip1:AQA3" + std::string(60, 'A')), "KMS unwrap failed"));
}

// --- Requests ------------------------------------------------------------------

TEST(KmsKmip, EncryptRequestLayoutGcm) {
    std::uint8_t key[32] = {1, 2, 3};
    std::vector<std::uint8_t> iv(12, 9);
    SecureBytes wire = kmip::build_encrypt_request(4, kmip::Mode::Gcm, "key-1", key, 32, iv);
    Item m = ttlv::decode(wire.data(), wire.size());
    ASSERT_EQ(m.tag, tag::kRequestMessage);
    const Item& h = m.require(tag::kRequestHeader, Type::Structure, "h");
    const Item& pv = h.require(tag::kProtocolVersion, Type::Structure, "pv");
    EXPECT_EQ(pv.require(tag::kProtocolVersionMajor, Type::Integer, "").number, 1);
    EXPECT_EQ(pv.require(tag::kProtocolVersionMinor, Type::Integer, "").number, 4);
    EXPECT_EQ(h.require(tag::kBatchCount, Type::Integer, "").number, 1);
    const Item& b = m.require(tag::kBatchItem, Type::Structure, "b");
    EXPECT_EQ(b.require(tag::kOperation, Type::Enumeration, "").number, kmip::kOpEncrypt);
    const Item& p = b.require(tag::kRequestPayload, Type::Structure, "p");
    ASSERT_EQ(p.items.size(), 4u);  // in the specification's order
    EXPECT_EQ(p.items[0].tag, tag::kUniqueIdentifier);
    EXPECT_EQ(p.items[0].text, "key-1");
    EXPECT_EQ(p.items[1].tag, tag::kCryptographicParameters);
    ASSERT_EQ(p.items[1].items.size(), 3u);
    EXPECT_EQ(p.items[1].items[0].tag, tag::kBlockCipherMode);
    EXPECT_EQ(p.items[1].items[0].number, kmip::kModeGcm);
    EXPECT_EQ(p.items[1].items[1].tag, tag::kCryptographicAlgorithm);
    EXPECT_EQ(p.items[1].items[1].number, kmip::kAlgorithmAes);
    EXPECT_EQ(p.items[1].items[2].tag, tag::kTagLength);
    EXPECT_EQ(p.items[1].items[2].number, 16);
    EXPECT_EQ(p.items[2].tag, tag::kData);
    EXPECT_EQ(p.items[2].bytes.size(), 32u);
    EXPECT_EQ(p.items[3].tag, tag::kIvCounterNonce);
    EXPECT_EQ(p.items[3].bytes, SecureBytes(iv.begin(), iv.end()));
}

TEST(KmsKmip, DecryptRequestLayoutCbcAndGcm) {
    SecureBytes wire = kmip::build_decrypt_request(2, sample(kmip::Mode::Cbc, "k", 32));
    Item m = ttlv::decode(wire.data(), wire.size());
    const Item& p = m.require(tag::kBatchItem, Type::Structure, "")
                        .require(tag::kRequestPayload, Type::Structure, "");
    const Item& cp = p.require(tag::kCryptographicParameters, Type::Structure, "");
    EXPECT_EQ(cp.require(tag::kBlockCipherMode, Type::Enumeration, "").number, kmip::kModeCbc);
    EXPECT_EQ(cp.require(tag::kPaddingMethod, Type::Enumeration, "").number, kmip::kPaddingPkcs5);
    EXPECT_EQ(p.require(tag::kData, Type::ByteString, "").bytes.size(), 48u);
    EXPECT_EQ(p.require(tag::kIvCounterNonce, Type::ByteString, "").bytes.size(), 16u);
    EXPECT_EQ(p.find(tag::kAuthEncTag), nullptr);

    wire = kmip::build_decrypt_request(4, sample(kmip::Mode::Gcm, "k", 32));
    m = ttlv::decode(wire.data(), wire.size());
    const Item& g = m.require(tag::kBatchItem, Type::Structure, "")
                        .require(tag::kRequestPayload, Type::Structure, "");
    EXPECT_EQ(g.items.back().tag, tag::kAuthEncTag);
    EXPECT_EQ(g.items.back().bytes.size(), 16u);
}

// --- Responses -----------------------------------------------------------------

TEST(KmsKmip, ParsesSuccessfulEncryptAndDecrypt) {
    std::vector<std::uint8_t> iv(12, 1);
    std::uint8_t ct[32] = {0}, tg[16] = {0};
    Item r = response(kmip::kOpEncrypt, kmip::kStatusSuccess, std::nullopt, "",
                      {Item::text_string(tag::kUniqueIdentifier, "1"), Item::byte_string(tag::kData, ct, 32),
                       Item::byte_string(tag::kAuthEncTag, tg, 16)});
    const Item& p = kmip::response_payload(r, kmip::kOpEncrypt, "1");
    kmip::WrappedKey w = kmip::parse_encrypt_response(p, kmip::Mode::Gcm, "1", iv, 32);
    EXPECT_EQ(w.iv, iv);
    EXPECT_EQ(w.tag.size(), 16u);
    EXPECT_EQ(w.ciphertext.size(), 32u);

    // No tag: the server does not do GCM.
    Item no_tag = response(kmip::kOpEncrypt, kmip::kStatusSuccess, std::nullopt, "",
                           {Item::byte_string(tag::kData, ct, 32)});
    std::string m = error_of([&] {
        kmip::parse_encrypt_response(kmip::response_payload(no_tag, kmip::kOpEncrypt, "1"), kmip::Mode::Gcm, "1", iv, 32);
    });
    EXPECT_NE(m.find("no Authenticated Encryption Tag"), std::string::npos) << m;

    // CBC ciphertext of the wrong size.
    m = error_of([&] {
        kmip::parse_encrypt_response(kmip::response_payload(no_tag, kmip::kOpEncrypt, "1"), kmip::Mode::Cbc, "1",
                                     std::vector<std::uint8_t>(16), 32);
    });
    EXPECT_TRUE(starts_with(m, "KMS malformed response")) << m;

    std::uint8_t key[32] = {7};
    Item d = response(kmip::kOpDecrypt, kmip::kStatusSuccess, std::nullopt, "", {Item::byte_string(tag::kData, key, 32)});
    SecureBytes out = kmip::parse_decrypt_response(kmip::response_payload(d, kmip::kOpDecrypt, "1"));
    EXPECT_EQ(out, SecureBytes(key, key + 32));
}

TEST(KmsKmip, MapsResultReasonsToClearErrors) {
    std::string m = failure(kmip::kOpEncrypt, kmip::reason::kItemNotFound, "Could not locate object: 7");
    EXPECT_TRUE(starts_with(m, "KMS key not found")) << m;
    EXPECT_NE(m.find("'7'"), std::string::npos) << m;
    EXPECT_NE(m.find("Item Not Found: Could not locate object: 7"), std::string::npos) << m;

    m = failure(kmip::kOpDecrypt, kmip::reason::kPermissionDenied,
                "The decryption key must be in the Active state to be used for decryption.");
    EXPECT_TRUE(starts_with(m, "KMS key not active")) << m;
    m = failure(kmip::kOpEncrypt, kmip::reason::kWrongKeyLifecycleState, "");
    EXPECT_TRUE(starts_with(m, "KMS key not active")) << m;
    m = failure(kmip::kOpEncrypt, kmip::reason::kPermissionDenied, "not yours");
    EXPECT_TRUE(starts_with(m, "KMS permission denied")) << m;
    m = failure(kmip::kOpEncrypt, kmip::reason::kAuthenticationNotSuccessful, "bad cert");
    EXPECT_TRUE(starts_with(m, "KMS certificate rejected")) << m;
    m = failure(kmip::kOpDecrypt, kmip::reason::kGeneralFailure, "Operation failed.");
    EXPECT_TRUE(starts_with(m, "KMS unwrap failed")) << m;
    m = failure(kmip::kOpEncrypt, 0x07, "Invalid field\x01\n");
    EXPECT_TRUE(starts_with(m, "KMS server error")) << m;
    EXPECT_NE(m.find("Invalid Field: Invalid field??"), std::string::npos) << m;
    m = failure(kmip::kOpEncrypt, std::nullopt, "");
    EXPECT_TRUE(starts_with(m, "KMS server error")) << m;
    m = failure(kmip::kOpEncrypt, 0x777, std::string(1000, 'x'));
    EXPECT_NE(m.find("Result Reason 0x777"), std::string::npos) << m;
    EXPECT_LT(m.size(), 400u);

    Item pending = response(kmip::kOpEncrypt, kmip::kStatusPending, std::nullopt, "");
    m = error_of([&] { kmip::response_payload(pending, kmip::kOpEncrypt, "1"); });
    EXPECT_NE(m.find("Operation Pending"), std::string::npos) << m;

    Item other_op = response(kmip::kOpDecrypt, kmip::kStatusSuccess, std::nullopt, "");
    m = error_of([&] { kmip::response_payload(other_op, kmip::kOpEncrypt, "1"); });
    EXPECT_TRUE(starts_with(m, "KMS malformed response")) << m;
}

// --- Configuration -------------------------------------------------------------

TEST(KmsKmip, FactoryChoosesByConnType) {
    EXPECT_STREQ(make_provider(config())->conn_type(), "kmip");
    KmsConfig c = config();
    c.conn_type = "KMIP";
    EXPECT_STREQ(make_provider(c)->conn_type(), "kmip");
    c.conn_type = "aws_kms";
    ErrorKind kind{};
    std::string m = error_of([&] { make_provider(c); }, &kind);
    EXPECT_EQ(kind, ErrorKind::BadKey);
    EXPECT_EQ(m, "KMS configuration: unknown conn_type 'aws_kms' (supported: kmip)");
    c.conn_type = "";
    EXPECT_TRUE(starts_with(error_of([&] { make_provider(c); }), "KMS configuration: conn_type is empty"));
}

TEST(KmsKmip, ConfigurationErrorsNameTheProblemNotTheSecret) {
    auto check = [](KmsConfig c, const std::string& want) {
        ErrorKind kind{};
        std::string m = error_of([&] { make_provider(c); }, &kind);
        EXPECT_EQ(kind, ErrorKind::BadKey) << m;
        EXPECT_NE(m.find(want), std::string::npos) << m;
        EXPECT_EQ(m.find("BEGIN"), std::string::npos) << m;
        EXPECT_EQ(m.find("SECRET-MARKER"), std::string::npos) << m;
    };
    KmsConfig c = config();
    c.params.erase("client_cert");
    check(c, "client_cert is missing");
    c = config();
    c.params["ca_cert"] = "";
    check(c, "ca_cert is missing");
    c = config();
    c.params["client_key"] = "-----BEGIN PRIVATE KEY-----\nSECRET-MARKER\n-----END PRIVATE KEY-----\n";
    check(c, "client_key is not an unencrypted PEM private key");
    c = config();
    c.params["client_cert"] = "SECRET-MARKER";
    check(c, "client_cert holds no PEM certificate");
    c = config();
    c.params["ca_cert"] = "SECRET-MARKER";
    check(c, "ca_cert holds no PEM certificate");
    c = config();
    c.params["client_key"] = self_signed("other").key;
    check(c, "client_key does not match client_cert");
    c = config();
    c.params["kmip_version"] = "2.0";
    check(c, "kmip_version must be");
    c = config();
    c.params["kmip_version"] = "1.2";
    c.params["cipher_mode"] = "gcm";
    check(c, "gcm needs kmip_version 1.4");
    c = config();
    c.params["cipher_mode"] = "ecb";
    check(c, "cipher_mode must be gcm or cbc");
    c = config();
    c.host = "";
    check(c, "host is missing");
    c = config();
    c.port = 70000;
    check(c, "out of range");
    c = config();
    c.read_timeout_ms = 0;
    check(c, "read timeout");
}

TEST(KmsKmip, ModeFollowsVersion) {
    KmsConfig c = config();
    EXPECT_EQ(KmipProvider(c).mode(), kmip::Mode::Gcm);
    c.params["kmip_version"] = "1.2";
    EXPECT_EQ(KmipProvider(c).mode(), kmip::Mode::Cbc);
    c.params["kmip_version"] = "1.4";
    c.params["cipher_mode"] = "cbc";
    EXPECT_EQ(KmipProvider(c).mode(), kmip::Mode::Cbc);
}

TEST(KmsKmip, WrapChecksBeforeContactingTheServer) {
    KmsConfig c = config(closed_port());
    auto p = make_provider(c);
    ErrorKind kind{};
    EXPECT_TRUE(starts_with(error_of([&] { p->wrap(nullptr, 0); }), "KMS wrap: nothing to wrap"));
    SecureBytes big(65, 1);
    error_of([&] { p->wrap(big); }, &kind);
    EXPECT_EQ(kind, ErrorKind::TooLarge);
    c.params["key_id"] = std::string(100, 'k');
    p = make_provider(c);
    SecureBytes key(32, 1);
    std::string m = error_of([&] { p->wrap(key); }, &kind);
    EXPECT_EQ(kind, ErrorKind::TooLarge) << m;
    EXPECT_NE(m.find("key_id is too long"), std::string::npos) << m;
    c.params.erase("key_id");
    p = make_provider(c);
    m = error_of([&] { p->wrap(key); }, &kind);
    EXPECT_EQ(kind, ErrorKind::BadKey) << m;
    EXPECT_NE(m.find("key_id is required"), std::string::npos) << m;
    EXPECT_TRUE(starts_with(error_of([&] { p->unwrap(std::string(201, 'A')); }), "KMS unwrap failed"));
    EXPECT_TRUE(starts_with(error_of([&] { p->unwrap("not-a-wrapped-key"); }), "KMS unwrap failed: malformed"));
}

// --- Network failure modes over loopback ---------------------------------------

TEST(KmsKmip, RefusedConnectionFailsQuickly) {
    auto p = make_provider(config(closed_port()));
    SecureBytes key(32, 1);
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { p->wrap(key); }); });
    EXPECT_TRUE(starts_with(m, "KMS unreachable: cannot connect to 127.0.0.1:")) << m;
    EXPECT_NE(m.find("Connection refused"), std::string::npos) << m;
    EXPECT_LT(ms, 2500);  // far below the 5000 ms connect timeout it must not wait for
}

TEST(KmsKmip, SilentPeerHitsTheReadTimeout) {
    Blackhole hole;
    KmsConfig c = config(hole.port);
    c.read_timeout_ms = 300;
    auto p = make_provider(c);
    SecureBytes key(32, 1);
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { p->wrap(key); }); });
    EXPECT_TRUE(starts_with(m, "KMS timeout: no answer within 300 ms during the TLS handshake with 127.0.0.1:")) << m;
    EXPECT_GE(ms, 290);
    EXPECT_LT(ms, 3000);  // the 300 ms timeout, not the 10000 ms default; slack for a loaded CI machine
}

TEST(KmsKmip, InterruptCallbackIsPolledAndAborts) {
    Blackhole hole;
    KmsConfig c = config(hole.port);
    c.read_timeout_ms = 30000;
    std::atomic<int> calls{0};
    auto start = std::chrono::steady_clock::now();
    c.interrupted = [&] {
        ++calls;
        return std::chrono::steady_clock::now() - start > Ms(350);
    };
    auto p = make_provider(c);
    std::string wrapped = kmip::encode_wrapped(sample(kmip::Mode::Gcm, "1", 32));
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { p->unwrap(wrapped); }); });
    EXPECT_TRUE(starts_with(m, "KMS request interrupted during the TLS handshake with 127.0.0.1:")) << m;
    EXPECT_GE(ms, 340);
    EXPECT_LT(ms, 5000);  // long before the 30 s read timeout
    // Polled every 100 ms; a loaded machine stretches each wait, so ask for
    // three polls in 350 ms (an interval of at most ~175 ms), not four.
    EXPECT_GE(calls.load(), 3);
}

TEST(KmsKmip, ThrowingInterruptCallbackAborts) {
    Blackhole hole;
    KmsConfig c = config(hole.port);
    c.interrupted = []() -> bool { throw std::runtime_error("boom"); };
    auto p = make_provider(c);
    SecureBytes key(32, 1);
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { p->wrap(key); }); });
    EXPECT_TRUE(starts_with(m, "KMS request interrupted")) << m;
    EXPECT_LT(ms, 2500);  // at the first poll, not after the 10000 ms read timeout
}

TEST(KmsKmip, ConnectTimeoutWhenTheBacklogIsFull) {
    // With a full accept queue Linux drops SYNs, so connect() hangs.
    Blackhole hole(0);
    std::vector<int> fillers;
    for (int i = 0; i < 4; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(hole.port));
        ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        fillers.push_back(fd);
    }
    ::usleep(50000);
    KmsConfig c = config(hole.port);
    c.connect_timeout_ms = 300;
    c.read_timeout_ms = 300;
    auto p = make_provider(c);
    SecureBytes key(32, 1);
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { p->wrap(key); }); });
    for (int fd : fillers) ::close(fd);
    if (starts_with(m, "KMS timeout")) GTEST_SKIP() << "the kernel accepted the connection: " << m;
    EXPECT_TRUE(starts_with(m, "KMS unreachable: connecting to 127.0.0.1:")) << m;
    EXPECT_NE(m.find("timed out after 300 ms"), std::string::npos) << m;
    EXPECT_LT(ms, 3000);  // the 300 ms timeout, not the 5000 ms default
}
