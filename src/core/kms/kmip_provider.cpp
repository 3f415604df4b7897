#include "kmip_provider.hpp"

#include "../base64.hpp"
#include "../errors.hpp"
#include "../fernet.hpp"  // random_bytes
#include "tls_client.hpp"

#include <cstdio>
#include <utility>

namespace conn_crypto::kms {
namespace kmip {
namespace {

using ttlv::Item;
using ttlv::Type;

[[noreturn]] void fail(const std::string& m) { throw Error(ErrorKind::Crypto, m); }
[[noreturn]] void malformed_wrapped(const std::string& why) {
    fail("KMS unwrap failed: malformed wrapped key (" + why + ")");
}

std::size_t iv_bytes(Mode m) { return m == Mode::Gcm ? kGcmIvBytes : kCbcIvBytes; }
std::size_t tag_bytes(Mode m) { return m == Mode::Gcm ? kGcmTagBytes : 0; }
std::size_t ciphertext_bytes(Mode m, std::size_t n) { return m == Mode::Gcm ? n : (n / 16 + 1) * 16; }

// Text from the server (or the configuration) made safe for a log line:
// printable ASCII only, bounded length.
std::string printable(std::string_view s, std::size_t max = 200) {
    std::string out;
    for (char c : s) {
        if (out.size() >= max) {
            out += "...";
            break;
        }
        unsigned char u = static_cast<unsigned char>(c);
        out.push_back(u >= 0x20 && u <= 0x7E ? c : '?');
    }
    return out;
}

std::string hex32(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%02X", static_cast<unsigned>(v));
    return buf;
}

Item request_message(int minor, std::uint32_t operation, std::vector<Item> payload) {
    std::vector<Item> header;
    header.push_back(Item::structure(tag::kProtocolVersion, {Item::integer(tag::kProtocolVersionMajor, 1),
                                                             Item::integer(tag::kProtocolVersionMinor, minor)}));
    header.push_back(Item::integer(tag::kBatchCount, 1));
    std::vector<Item> batch;
    batch.push_back(Item::enumeration(tag::kOperation, operation));
    batch.push_back(Item::structure(tag::kRequestPayload, std::move(payload)));
    std::vector<Item> message;
    message.push_back(Item::structure(tag::kRequestHeader, std::move(header)));
    message.push_back(Item::structure(tag::kBatchItem, std::move(batch)));
    return Item::structure(tag::kRequestMessage, std::move(message));
}

// Cryptographic Parameters, fields in the order of the specification.
Item crypto_parameters(Mode mode) {
    std::vector<Item> p;
    if (mode == Mode::Gcm) {
        p.push_back(Item::enumeration(tag::kBlockCipherMode, kModeGcm));
        p.push_back(Item::enumeration(tag::kCryptographicAlgorithm, kAlgorithmAes));
        p.push_back(Item::integer(tag::kTagLength, static_cast<std::int32_t>(kGcmTagBytes)));
    } else {
        p.push_back(Item::enumeration(tag::kBlockCipherMode, kModeCbc));
        p.push_back(Item::enumeration(tag::kPaddingMethod, kPaddingPkcs5));
        p.push_back(Item::enumeration(tag::kCryptographicAlgorithm, kAlgorithmAes));
    }
    return Item::structure(tag::kCryptographicParameters, std::move(p));
}

void check_key_id(const std::string& key_id) {
    if (key_id.empty()) fail("KMS wrap: key_id is empty");
    if (key_id.size() > kMaxKeyIdBytes)
        fail("KMS wrap: key_id is longer than " + std::to_string(kMaxKeyIdBytes) + " bytes");
}

bool mentions_inactive(const std::string& message) {
    return message.find("Active state") != std::string::npos || message.find("not active") != std::string::npos ||
           message.find("not Active") != std::string::npos;
}

}  // namespace

std::string reason_name(std::uint32_t r) {
    switch (r) {
        case 0x01: return "Item Not Found";
        case 0x02: return "Response Too Large";
        case 0x03: return "Authentication Not Successful";
        case 0x04: return "Invalid Message";
        case 0x05: return "Operation Not Supported";
        case 0x06: return "Missing Data";
        case 0x07: return "Invalid Field";
        case 0x08: return "Feature Not Supported";
        case 0x09: return "Operation Canceled By Requester";
        case 0x0A: return "Cryptographic Failure";
        case 0x0B: return "Illegal Operation";
        case 0x0C: return "Permission Denied";
        case 0x0D: return "Object Archived";
        case 0x0E: return "Index Out of Bounds";
        case 0x0F: return "Application Namespace Not Supported";
        case 0x10: return "Key Format Type Not Supported";
        case 0x11: return "Key Compression Type Not Supported";
        case 0x12: return "Encoding Option Error";
        case 0x13: return "Key Value Not Present";
        case 0x14: return "Attestation Required";
        case 0x15: return "Attestation Failed";
        case 0x16: return "Sensitive";
        case 0x17: return "Not Extractable";
        case 0x18: return "Object Already Exists";
        case 0x43: return "Wrong Key Lifecycle State";
        case 0x100: return "General Failure";
        default: return "Result Reason " + hex32(r);
    }
}

std::size_t wrapped_length(Mode mode, std::size_t key_id_len, std::size_t plaintext_len) noexcept {
    std::size_t raw = 2 + key_id_len + iv_bytes(mode) + tag_bytes(mode) + ciphertext_bytes(mode, plaintext_len);
    return kWrapPrefix.size() + (raw * 4 + 2) / 3;  // unpadded base64
}

std::string encode_wrapped(const WrappedKey& w) {
    if (w.mode != Mode::Gcm && w.mode != Mode::Cbc) fail("KMS wrap: unknown mode");
    check_key_id(w.key_id);
    if (w.iv.size() != iv_bytes(w.mode) || w.tag.size() != tag_bytes(w.mode) || w.ciphertext.empty())
        fail("KMS wrap: the server's answer has fields of unexpected sizes");
    std::vector<std::uint8_t> raw;
    raw.reserve(2 + w.key_id.size() + w.iv.size() + w.tag.size() + w.ciphertext.size());
    raw.push_back(static_cast<std::uint8_t>(w.mode));
    raw.push_back(static_cast<std::uint8_t>(w.key_id.size()));
    raw.insert(raw.end(), w.key_id.begin(), w.key_id.end());
    raw.insert(raw.end(), w.iv.begin(), w.iv.end());
    raw.insert(raw.end(), w.tag.begin(), w.tag.end());
    raw.insert(raw.end(), w.ciphertext.begin(), w.ciphertext.end());
    std::string b64(base64::encoded_length(raw.size()), '\0');
    base64::encode_urlsafe(raw.data(), raw.size(), b64.data());
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    return std::string(kWrapPrefix) + b64;
}

WrappedKey decode_wrapped(std::string_view text) {
    if (text.substr(0, kWrapPrefix.size()) != kWrapPrefix) {
        if (text.find(':') != std::string_view::npos && text.find(':') < 16)
            malformed_wrapped("unknown scheme '" + printable(text.substr(0, text.find(':'))) + "', expected kmip1");
        malformed_wrapped("missing the kmip1: prefix");
    }
    std::string_view body = text.substr(kWrapPrefix.size());
    if (body.size() > 4 * kMaxWrappedChars) malformed_wrapped("too long");
    std::vector<std::uint8_t> raw(base64::decoded_bound(body.size()));
    auto n = base64::decode(body, base64::Alphabet::UrlSafe, raw.data());
    if (!n) malformed_wrapped("not url-safe base64");
    raw.resize(*n);
    if (raw.size() < 2) malformed_wrapped("too short");
    WrappedKey w;
    if (raw[0] != static_cast<std::uint8_t>(Mode::Gcm) && raw[0] != static_cast<std::uint8_t>(Mode::Cbc))
        malformed_wrapped("unknown mode " + std::to_string(raw[0]));
    w.mode = static_cast<Mode>(raw[0]);
    std::size_t id_len = raw[1];
    if (id_len == 0) malformed_wrapped("empty key id");
    std::size_t fixed = 2 + id_len + iv_bytes(w.mode) + tag_bytes(w.mode);
    if (raw.size() <= fixed) malformed_wrapped("too short");
    std::size_t ct = raw.size() - fixed;
    if (w.mode == Mode::Gcm && ct > kMaxWrapPlaintext) malformed_wrapped("ciphertext too long");
    if (w.mode == Mode::Cbc && (ct % 16 != 0 || ct > kMaxWrapPlaintext + 16))
        malformed_wrapped("CBC ciphertext is not a whole number of blocks");
    auto p = raw.begin() + 2;
    w.key_id.assign(p, p + static_cast<long>(id_len));
    p += static_cast<long>(id_len);
    w.iv.assign(p, p + static_cast<long>(iv_bytes(w.mode)));
    p += static_cast<long>(iv_bytes(w.mode));
    w.tag.assign(p, p + static_cast<long>(tag_bytes(w.mode)));
    p += static_cast<long>(tag_bytes(w.mode));
    w.ciphertext.assign(p, raw.end());
    return w;
}

SecureBytes build_encrypt_request(int minor, Mode mode, const std::string& key_id, const std::uint8_t* plaintext,
                                  std::size_t n, const std::vector<std::uint8_t>& iv) {
    std::vector<Item> payload;
    payload.push_back(Item::text_string(tag::kUniqueIdentifier, key_id));
    payload.push_back(crypto_parameters(mode));
    payload.push_back(Item::byte_string(tag::kData, plaintext, n));
    payload.push_back(Item::byte_string(tag::kIvCounterNonce, iv.data(), iv.size()));
    return ttlv::encode(request_message(minor, kOpEncrypt, std::move(payload)));
}

SecureBytes build_decrypt_request(int minor, const WrappedKey& w) {
    std::vector<Item> payload;
    payload.push_back(Item::text_string(tag::kUniqueIdentifier, w.key_id));
    payload.push_back(crypto_parameters(w.mode));
    payload.push_back(Item::byte_string(tag::kData, w.ciphertext.data(), w.ciphertext.size()));
    payload.push_back(Item::byte_string(tag::kIvCounterNonce, w.iv.data(), w.iv.size()));
    if (w.mode == Mode::Gcm) payload.push_back(Item::byte_string(tag::kAuthEncTag, w.tag.data(), w.tag.size()));
    return ttlv::encode(request_message(minor, kOpDecrypt, std::move(payload)));
}

const ttlv::Item& response_payload(const Item& response, std::uint32_t operation, const std::string& key_id) {
    if (response.tag != tag::kResponseMessage || response.type != Type::Structure)
        fail("KMS malformed response: not a KMIP Response Message");
    const Item& header = response.require(tag::kResponseHeader, Type::Structure, "Response Header");
    if (const Item* count = header.find_typed(tag::kBatchCount, Type::Integer, "Batch Count"))
        if (count->number != 1) fail("KMS malformed response: " + std::to_string(count->number) + " batch items");
    const Item* item = nullptr;
    for (const Item& child : response.items) {
        if (child.tag != tag::kBatchItem) continue;
        if (item) fail("KMS malformed response: more than one batch item");
        if (child.type != Type::Structure) fail("KMS malformed response: Batch Item is not a structure");
        item = &child;
    }
    if (!item) fail("KMS malformed response: no batch item");
    if (const Item* op = item->find_typed(tag::kOperation, Type::Enumeration, "Operation"))
        if (op->number != operation)
            fail("KMS malformed response: answer for operation " + hex32(static_cast<std::uint32_t>(op->number)));

    std::uint32_t status =
        static_cast<std::uint32_t>(item->require(tag::kResultStatus, Type::Enumeration, "Result Status").number);
    if (status == kStatusSuccess) return item->require(tag::kResponsePayload, Type::Structure, "Response Payload");

    std::string id = "'" + printable(key_id, 80) + "'";
    if (status == kStatusPending) fail("KMS server error: the server answered asynchronously (Operation Pending), which is not supported");
    if (status != kStatusFailed && status != kStatusUndone)
        fail("KMS malformed response: unknown Result Status " + hex32(status));

    const Item* reason_item = item->find_typed(tag::kResultReason, Type::Enumeration, "Result Reason");
    const Item* message_item = item->find_typed(tag::kResultMessage, Type::TextString, "Result Message");
    std::uint32_t reason = reason_item ? static_cast<std::uint32_t>(reason_item->number) : 0;
    std::string message = message_item ? message_item->text : std::string();
    std::string detail = "(" + (reason_item ? reason_name(reason) : std::string("no Result Reason")) +
                         (message.empty() ? std::string() : ": " + printable(message)) + ")";

    switch (reason) {
        case reason::kItemNotFound:
            fail("KMS key not found: the server has no key " + id + " " + detail);
        case reason::kWrongKeyLifecycleState:
            fail("KMS key not active: key " + id + " cannot be used in its current state " + detail);
        case reason::kAuthenticationNotSuccessful:
            fail("KMS certificate rejected: the server did not authenticate the client " + detail);
        case reason::kPermissionDenied:
            if (mentions_inactive(message))
                fail("KMS key not active: key " + id + " is not in the Active state " + detail);
            fail("KMS permission denied for key " + id + " " + detail);
        default:
            break;
    }
    if (operation == kOpDecrypt &&
        (reason == reason::kCryptographicFailure || reason == reason::kGeneralFailure || reason == 0))
        fail("KMS unwrap failed: the server could not decrypt with key " + id +
             " (wrong key, or the wrapped key was altered) " + detail);
    fail("KMS server error: " + std::string(operation == kOpEncrypt ? "Encrypt" : "Decrypt") + " failed " + detail);
}

WrappedKey parse_encrypt_response(const Item& payload, Mode mode, const std::string& key_id,
                                  const std::vector<std::uint8_t>& iv_sent, std::size_t plaintext_len) {
    WrappedKey w;
    w.mode = mode;
    w.key_id = key_id;
    const Item& data = payload.require(tag::kData, Type::ByteString, "Data");
    if (data.bytes.size() != ciphertext_bytes(mode, plaintext_len))
        fail("KMS malformed response: ciphertext of " + std::to_string(data.bytes.size()) + " bytes for " +
             std::to_string(plaintext_len) + " bytes of plaintext");
    w.ciphertext.assign(data.bytes.begin(), data.bytes.end());
    w.iv = iv_sent;
    if (const Item* iv = payload.find_typed(tag::kIvCounterNonce, Type::ByteString, "IV/Counter/Nonce")) {
        if (iv->bytes.size() != iv_bytes(mode))
            fail("KMS malformed response: IV/Counter/Nonce of " + std::to_string(iv->bytes.size()) + " bytes");
        w.iv.assign(iv->bytes.begin(), iv->bytes.end());
    }
    if (mode == Mode::Gcm) {
        const Item* t = payload.find_typed(tag::kAuthEncTag, Type::ByteString, "Authenticated Encryption Tag");
        if (!t) fail("KMS server error: the server returned no Authenticated Encryption Tag (does it support AES-GCM? set cipher_mode to cbc)");
        if (t->bytes.size() != kGcmTagBytes)
            fail("KMS malformed response: Authenticated Encryption Tag of " + std::to_string(t->bytes.size()) +
                 " bytes, expected 16");
        w.tag.assign(t->bytes.begin(), t->bytes.end());
    }
    return w;
}

SecureBytes parse_decrypt_response(const Item& payload) {
    const Item& data = payload.require(tag::kData, Type::ByteString, "Data");
    if (data.bytes.empty() || data.bytes.size() > kMaxWrapPlaintext)
        fail("KMS unwrap failed: the server returned " + std::to_string(data.bytes.size()) + " bytes");
    return data.bytes;
}

}  // namespace kmip

// ---------------------------------------------------------------------------
namespace {

const std::string* param(const KmsConfig& c, const char* name) {
    auto it = c.params.find(name);
    return it == c.params.end() ? nullptr : &it->second;
}

const std::string& required_param(const KmsConfig& c, const char* name) {
    const std::string* v = param(c, name);
    if (!v || v->empty())
        throw Error(ErrorKind::BadKey, std::string("KMS configuration: parameter ") + name + " is missing");
    return *v;
}

int checked_timeout(int ms, const char* name) {
    if (ms <= 0 || ms > 3600 * 1000)
        throw Error(ErrorKind::BadKey, std::string("KMS configuration: ") + name + " must be 1..3600000 ms");
    return ms;
}

}  // namespace

KmipProvider::KmipProvider(const KmsConfig& config) {
    if (config.host.empty()) throw Error(ErrorKind::BadKey, "KMS configuration: host is missing");
    if (config.port < 0 || config.port > 65535)
        throw Error(ErrorKind::BadKey, "KMS configuration: port " + std::to_string(config.port) + " is out of range");
    endpoint_.host = config.host;
    endpoint_.port = config.port == 0 ? 5696 : config.port;
    endpoint_.connect_timeout_ms = checked_timeout(config.connect_timeout_ms, "connect timeout");
    endpoint_.read_timeout_ms = checked_timeout(config.read_timeout_ms, "read timeout");
    endpoint_.interrupted = config.interrupted;
    if (const std::string* sn = param(config, "server_name")) endpoint_.server_name = *sn;

    std::string version = "1.4";
    if (const std::string* v = param(config, "kmip_version"); v && !v->empty()) version = *v;
    if (version == "1.4") {
        minor_ = 4;
        mode_ = kmip::Mode::Gcm;
    } else if (version == "1.2") {
        minor_ = 2;
        mode_ = kmip::Mode::Cbc;
    } else {
        throw Error(ErrorKind::BadKey, "KMS configuration: kmip_version must be \"1.4\" or \"1.2\", not \"" +
                                           kmip::printable(version, 20) + "\"");
    }
    if (const std::string* m = param(config, "cipher_mode"); m && !m->empty()) {
        if (*m == "gcm" || *m == "GCM") {
            if (minor_ < 4)
                throw Error(ErrorKind::BadKey, "KMS configuration: cipher_mode gcm needs kmip_version 1.4");
            mode_ = kmip::Mode::Gcm;
        } else if (*m == "cbc" || *m == "CBC") {
            mode_ = kmip::Mode::Cbc;
        } else {
            throw Error(ErrorKind::BadKey, "KMS configuration: cipher_mode must be gcm or cbc");
        }
    }
    if (const std::string* k = param(config, "key_id")) {
        key_id_ = *k;
        if (key_id_.size() > kmip::kMaxKeyIdBytes)
            throw Error(ErrorKind::BadKey, "KMS configuration: key_id is longer than 255 bytes");
    }
    tls_ = std::make_unique<TlsContext>(required_param(config, "client_cert"), required_param(config, "client_key"),
                                        required_param(config, "ca_cert"));
}

KmipProvider::~KmipProvider() = default;

ttlv::Item KmipProvider::round_trip(const SecureBytes& request) {
    TlsConnection conn(*tls_, endpoint_);
    conn.write_all(request.data(), request.size());
    SecureBytes message(ttlv::kHeaderBytes);
    conn.read_exact(message.data(), ttlv::kHeaderBytes);
    std::size_t body = ttlv::message_body_length(message.data(), kmip::tag::kResponseMessage);
    message.resize(ttlv::kHeaderBytes + body);
    if (body) conn.read_exact(message.data() + ttlv::kHeaderBytes, body);
    return ttlv::decode(message.data(), message.size());
}

std::string KmipProvider::do_wrap(const std::uint8_t* plaintext, std::size_t n) {
    if (key_id_.empty()) throw Error(ErrorKind::BadKey, "KMS configuration: key_id is required to wrap a key");
    std::size_t len = kmip::wrapped_length(mode_, key_id_.size(), n);
    if (len > kMaxWrappedChars)
        throw Error(ErrorKind::TooLarge, "KMS wrapped key would be " + std::to_string(len) + " characters, more than " +
                                             std::to_string(kMaxWrappedChars) + ": key_id is too long");
    std::vector<std::uint8_t> iv(mode_ == kmip::Mode::Gcm ? kmip::kGcmIvBytes : kmip::kCbcIvBytes);
    random_bytes(iv.data(), iv.size());
    int minor = mode_ == kmip::Mode::Gcm ? 4 : minor_;
    SecureBytes request = kmip::build_encrypt_request(minor, mode_, key_id_, plaintext, n, iv);
    ttlv::Item response = round_trip(request);
    const ttlv::Item& payload = kmip::response_payload(response, kmip::kOpEncrypt, key_id_);
    return kmip::encode_wrapped(kmip::parse_encrypt_response(payload, mode_, key_id_, iv, n));
}

SecureBytes KmipProvider::do_unwrap(std::string_view wrapped) {
    kmip::WrappedKey w = kmip::decode_wrapped(wrapped);
    int minor = w.mode == kmip::Mode::Gcm ? 4 : minor_;
    SecureBytes request = kmip::build_decrypt_request(minor, w);
    ttlv::Item response = round_trip(request);
    const ttlv::Item& payload = kmip::response_payload(response, kmip::kOpDecrypt, w.key_id);
    return kmip::parse_decrypt_response(payload);
}

}  // namespace conn_crypto::kms
