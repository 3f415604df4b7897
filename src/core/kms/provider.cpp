#include "provider.hpp"

#include "../errors.hpp"
#include "kmip_provider.hpp"

#include <cctype>

namespace conn_crypto::kms {

std::string KmsProvider::wrap(const std::uint8_t* plaintext, std::size_t n) {
    if (n == 0 || plaintext == nullptr) throw Error(ErrorKind::Crypto, "KMS wrap: nothing to wrap (empty key)");
    if (n > kMaxWrapPlaintext)
        throw Error(ErrorKind::TooLarge, "KMS wrap: " + std::to_string(n) + " bytes exceed the limit of " +
                                             std::to_string(kMaxWrapPlaintext) + " bytes for a wrapped key");
    std::string out = do_wrap(plaintext, n);
    if (out.size() > kMaxWrappedChars)
        throw Error(ErrorKind::TooLarge, "KMS wrapped key would be " + std::to_string(out.size()) +
                                             " characters, more than " + std::to_string(kMaxWrappedChars));
    for (char c : out)
        if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7E)
            throw Error(ErrorKind::Crypto, "KMS wrap produced a non-printable wrapped key");
    return out;
}

SecureBytes KmsProvider::unwrap(std::string_view wrapped) {
    if (wrapped.empty()) throw Error(ErrorKind::Crypto, "KMS unwrap failed: the wrapped key is empty");
    if (wrapped.size() > kMaxWrappedChars)
        throw Error(ErrorKind::Crypto, "KMS unwrap failed: the wrapped key is longer than " +
                                           std::to_string(kMaxWrappedChars) + " characters");
    return do_unwrap(wrapped);
}

std::unique_ptr<KmsProvider> make_provider(const KmsConfig& config) {
    std::string type;
    for (char c : config.conn_type) type.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (type.empty()) throw Error(ErrorKind::BadKey, "KMS configuration: conn_type is empty (supported: kmip)");
    if (type == "kmip") return std::make_unique<KmipProvider>(config);
    std::string shown = config.conn_type.size() > 40 ? config.conn_type.substr(0, 40) + "..." : config.conn_type;
    for (char& c : shown)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) c = '?';
    throw Error(ErrorKind::BadKey, "KMS configuration: unknown conn_type '" + shown + "' (supported: kmip)");
}

}  // namespace conn_crypto::kms
