// KMIP provider: wraps data keys with the KMIP Encrypt operation and unwraps
// them with Decrypt, under a symmetric (AES) key that stays on the KMIP server.
//
// Parameters (KmsConfig::params):
//   client_cert   PEM client certificate (optionally followed by its chain)
//   client_key    PEM private key of client_cert, unencrypted
//   ca_cert       PEM certificate(s) the server's chain must lead to
//   key_id        Unique Identifier of the AES key (needed to wrap; unwrap
//                 uses the identifier stored in the wrapped key)
//   kmip_version  "1.4" (default) or "1.2"
//   cipher_mode   "gcm" (default with 1.4) or "cbc" (default with 1.2; GCM
//                 needs 1.4, the version that added the tag fields)
//   server_name   optional: the DNS name or IP address to verify the server
//                 certificate against, when it differs from host
// host and port (default 5696) come from KmsConfig.
//
// Modes:
//   GCM: AES-GCM, a 12-byte IV generated here (IV/Counter/Nonce), Tag Length
//        16; the server returns the Authenticated Encryption Tag, which
//        Decrypt sends back. Requests use KMIP 1.4.
//   CBC: AES-CBC with PKCS5 padding and a 16-byte IV generated here; no
//        integrity of its own (a tampered wrapped key decrypts to garbage or
//        fails padding): the data key it protects must be checked by its use
//        (Fernet tokens are authenticated). Requests use kmip_version.
//
// Wrapped format, version 1:
//   "kmip1:" + url-safe base64 without padding of
//   mode (1 byte: 1 GCM, 2 CBC) | key_id length L (1 byte, 1..255) | key_id |
//   IV (12 GCM, 16 CBC) | tag (16, GCM only) | ciphertext
// For a 32-byte key and a 36-character key_id (a UUID) this is 137 (GCM) or
// 142 (CBC) characters; with a 32-byte key it fits 200 characters for
// key_ids up to 83 (GCM) / 79 (CBC) bytes.
#pragma once
#include "../no_postgres.hpp"
#include "../secure_bytes.hpp"
#include "provider.hpp"
#include "tls_client.hpp"
#include "ttlv.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conn_crypto::kms {

namespace kmip {

// Tags (KMIP 1.4 section 9.1.3.1).
namespace tag {
constexpr std::uint32_t kAuthEncAdditionalData = 0x4200FE;
constexpr std::uint32_t kAuthEncTag = 0x4200FF;
constexpr std::uint32_t kBatchCount = 0x42000D;
constexpr std::uint32_t kBatchItem = 0x42000F;
constexpr std::uint32_t kBlockCipherMode = 0x420011;
constexpr std::uint32_t kCryptographicAlgorithm = 0x420028;
constexpr std::uint32_t kCryptographicParameters = 0x42002B;
constexpr std::uint32_t kData = 0x4200C2;
constexpr std::uint32_t kIvCounterNonce = 0x42003D;
constexpr std::uint32_t kMaximumResponseSize = 0x420050;
constexpr std::uint32_t kOperation = 0x42005C;
constexpr std::uint32_t kPaddingMethod = 0x42005F;
constexpr std::uint32_t kProtocolVersion = 0x420069;
constexpr std::uint32_t kProtocolVersionMajor = 0x42006A;
constexpr std::uint32_t kProtocolVersionMinor = 0x42006B;
constexpr std::uint32_t kRequestHeader = 0x420077;
constexpr std::uint32_t kRequestMessage = 0x420078;
constexpr std::uint32_t kRequestPayload = 0x420079;
constexpr std::uint32_t kResponseHeader = 0x42007A;
constexpr std::uint32_t kResponseMessage = 0x42007B;
constexpr std::uint32_t kResponsePayload = 0x42007C;
constexpr std::uint32_t kResultMessage = 0x42007D;
constexpr std::uint32_t kResultReason = 0x42007E;
constexpr std::uint32_t kResultStatus = 0x42007F;
constexpr std::uint32_t kTagLength = 0x4200CE;
constexpr std::uint32_t kTimeStamp = 0x420092;
constexpr std::uint32_t kUniqueBatchItemId = 0x420093;
constexpr std::uint32_t kUniqueIdentifier = 0x420094;
}  // namespace tag

// Enumeration values.
constexpr std::uint32_t kOpEncrypt = 0x1F;
constexpr std::uint32_t kOpDecrypt = 0x20;
constexpr std::uint32_t kModeCbc = 0x01;
constexpr std::uint32_t kModeGcm = 0x09;
constexpr std::uint32_t kPaddingPkcs5 = 0x03;
constexpr std::uint32_t kAlgorithmAes = 0x03;
constexpr std::uint32_t kStatusSuccess = 0x00;
constexpr std::uint32_t kStatusFailed = 0x01;
constexpr std::uint32_t kStatusPending = 0x02;
constexpr std::uint32_t kStatusUndone = 0x03;

namespace reason {
constexpr std::uint32_t kItemNotFound = 0x01;
constexpr std::uint32_t kAuthenticationNotSuccessful = 0x03;
constexpr std::uint32_t kCryptographicFailure = 0x0A;
constexpr std::uint32_t kPermissionDenied = 0x0C;
constexpr std::uint32_t kWrongKeyLifecycleState = 0x43;  // KMIP 2.0
constexpr std::uint32_t kGeneralFailure = 0x100;
}  // namespace reason

// Name of a Result Reason, e.g. "Item Not Found"; "Result Reason 0x.." if unknown.
std::string reason_name(std::uint32_t reason);

enum class Mode : std::uint8_t { Gcm = 1, Cbc = 2 };

constexpr std::size_t kGcmIvBytes = 12;
constexpr std::size_t kGcmTagBytes = 16;
constexpr std::size_t kCbcIvBytes = 16;
constexpr std::size_t kMaxKeyIdBytes = 255;
constexpr std::string_view kWrapPrefix = "kmip1:";

struct WrappedKey {
    Mode mode = Mode::Gcm;
    std::string key_id;
    std::vector<std::uint8_t> iv;
    std::vector<std::uint8_t> tag;  // GCM only
    std::vector<std::uint8_t> ciphertext;
};

// Length in characters of the wrapped form of plaintext_len bytes.
std::size_t wrapped_length(Mode mode, std::size_t key_id_len, std::size_t plaintext_len) noexcept;

// Encodes; throws Error(Crypto) if a field has the wrong size for its mode.
std::string encode_wrapped(const WrappedKey& w);

// Decodes and checks structure; throws Error(Crypto) "KMS unwrap failed:
// malformed wrapped key (...)".
WrappedKey decode_wrapped(std::string_view text);

// Request messages (protocol version 1.minor, batch count 1).
SecureBytes build_encrypt_request(int minor, Mode mode, const std::string& key_id, const std::uint8_t* plaintext,
                                  std::size_t n, const std::vector<std::uint8_t>& iv);
SecureBytes build_decrypt_request(int minor, const WrappedKey& w);

// Checks a decoded Response Message for one batch item of `operation` and
// returns its Response Payload. A failed result throws Error(Crypto) with a
// message naming the cause, from the Result Reason and Result Message:
// "KMS key not found", "KMS key not active", "KMS certificate rejected",
// "KMS permission denied", "KMS unwrap failed" (Decrypt), "KMS server error".
const ttlv::Item& response_payload(const ttlv::Item& response, std::uint32_t operation, const std::string& key_id);

// Encrypt response payload -> filled WrappedKey (key_id, mode, iv as sent
// unless the server returned one).
WrappedKey parse_encrypt_response(const ttlv::Item& payload, Mode mode, const std::string& key_id,
                                  const std::vector<std::uint8_t>& iv_sent, std::size_t plaintext_len);
SecureBytes parse_decrypt_response(const ttlv::Item& payload);

}  // namespace kmip

class KmipProvider final : public KmsProvider {
public:
    // Validates the configuration and loads the TLS credentials (throws
    // Error(BadKey)); does not connect.
    explicit KmipProvider(const KmsConfig& config);
    ~KmipProvider() override;

    const char* conn_type() const noexcept override { return "kmip"; }

    // The mode wrap uses with this configuration.
    kmip::Mode mode() const noexcept { return mode_; }

private:
    std::string do_wrap(const std::uint8_t* plaintext, std::size_t n) override;
    SecureBytes do_unwrap(std::string_view wrapped) override;

    // Sends one request, returns the decoded response message.
    ttlv::Item round_trip(const SecureBytes& request);

    TlsEndpoint endpoint_;  // no PEM material is kept beyond tls_
    std::string key_id_;
    int minor_ = 4;
    kmip::Mode mode_ = kmip::Mode::Gcm;
    std::unique_ptr<TlsContext> tls_;
};

}  // namespace conn_crypto::kms
