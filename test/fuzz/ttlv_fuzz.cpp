// Fuzzes the KMIP response path with arbitrary bytes from a "server": the
// TTLV decoder, the message header check, and the response checks that turn
// a decoded message into a payload or a clear error. Only conn_crypto::Error
// may come out; a decoded item must re-encode to the same bytes.
#include "errors.hpp"
#include "kms/kmip_provider.hpp"
#include "kms/ttlv.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace conn_crypto;
using namespace conn_crypto::kms;

namespace {

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "ttlv_fuzz: invariant broken at line %d: %s\n",    \
                         __LINE__, #cond);                                           \
            std::abort();                                                            \
        }                                                                            \
    } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size >= ttlv::kHeaderBytes) {
        try {
            std::size_t body = ttlv::message_body_length(data, kmip::tag::kResponseMessage);
            CHECK(body % 8 == 0);
        } catch (const Error&) {
        }
    }
    try {
        ttlv::Item item = ttlv::decode(data, size);
        // Round trip: what decodes must encode back to the same bytes.
        SecureBytes again = ttlv::encode(item);
        CHECK(again.size() == size && std::memcmp(again.data(), data, size) == 0);
        for (std::uint32_t op : {0x1Fu, 0x20u}) {  // Encrypt, Decrypt
            try {
                const ttlv::Item& payload = kmip::response_payload(item, op, "key-1");
                if (op == 0x1F) {
                    std::vector<std::uint8_t> iv(12, 1);
                    kmip::parse_encrypt_response(payload, kmip::Mode::Gcm, "key-1", iv, 32);
                } else {
                    kmip::parse_decrypt_response(payload);
                }
            } catch (const Error&) {
            }
        }
    } catch (const Error&) {
    }
    return 0;
}
