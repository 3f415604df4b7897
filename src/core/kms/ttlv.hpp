// KMIP TTLV (Tag, Type, Length, Value) encoding, KMIP 1.x section 9.1:
//   tag    3 bytes, big-endian (0x42XXXX for standard tags)
//   type   1 byte
//   length 4 bytes, big-endian: the length of the value without padding
//   value  padded with zero bytes to a multiple of 8
// Integer and Enumeration values are 4 bytes, Interval 4 bytes, Long Integer,
// Boolean and Date-Time 8 bytes; Text and Byte Strings any length; Big Integer
// a multiple of 8; a Structure's value is the concatenation of its items.
//
// The decoder is written for hostile input: every length is checked against
// the remaining bytes before it is used, fixed-size types must have their
// fixed length, padding must be zero, Booleans 0 or 1, text valid UTF-8,
// nesting and total size are bounded. Errors throw conn_crypto::Error.
#pragma once
#include "../no_postgres.hpp"
#include "../secure_bytes.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace conn_crypto::kms::ttlv {

enum class Type : std::uint8_t {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
};

const char* type_name(Type t) noexcept;

struct Limits {
    std::size_t max_message = 1u << 20;  // total encoded bytes, header included
    std::size_t max_depth = 16;          // nesting of Structures (top level = 1)
};

// One TTLV item. Numeric types keep their value in `number` (Integer as
// int32, Enumeration and Interval as uint32, Boolean 0/1, Date-Time as
// seconds since the epoch); Text String in `text`; Byte String and Big
// Integer (two's complement, big-endian) in `bytes`, which is wiped on
// release because payloads carry key material; Structure in `items`.
struct Item {
    std::uint32_t tag = 0;
    Type type = Type::Structure;
    std::int64_t number = 0;
    std::string text;
    SecureBytes bytes;
    std::vector<Item> items;

    static Item structure(std::uint32_t tag, std::vector<Item> items = {});
    static Item integer(std::uint32_t tag, std::int32_t v);
    static Item long_integer(std::uint32_t tag, std::int64_t v);
    static Item big_integer(std::uint32_t tag, SecureBytes twos_complement_be);
    static Item enumeration(std::uint32_t tag, std::uint32_t v);
    static Item boolean(std::uint32_t tag, bool v);
    static Item text_string(std::uint32_t tag, std::string v);
    static Item byte_string(std::uint32_t tag, const std::uint8_t* data, std::size_t n);
    static Item date_time(std::uint32_t tag, std::int64_t seconds);
    static Item interval(std::uint32_t tag, std::uint32_t seconds);

    // First direct child with this tag, or nullptr (Structures only).
    const Item* find(std::uint32_t tag) const noexcept;
    // First direct child with this tag, which must exist and have this type;
    // throws Error naming `what` otherwise.
    const Item& require(std::uint32_t tag, Type type, const char* what) const;
    // Like find, but a child of another type than `type` throws.
    const Item* find_typed(std::uint32_t tag, Type type, const char* what) const;
};

constexpr std::size_t kHeaderBytes = 8;
constexpr std::uint32_t kMaxTag = 0xFFFFFF;

// Rounds n up to a multiple of 8.
constexpr std::size_t padded(std::size_t n) noexcept { return (n + 7) & ~static_cast<std::size_t>(7); }

// Encodes an item. Returns secure bytes: requests carry plaintext keys.
// Throws Error when a tag exceeds 24 bits or the encoding exceeds 4 GiB.
SecureBytes encode(const Item& item);

// Decodes exactly one item filling the whole buffer. Throws Error(Crypto)
// with a message starting "KMS malformed TTLV" on any violation.
Item decode(const std::uint8_t* data, std::size_t n, const Limits& limits = {});

// Reads the 8-byte header of a message: checks the tag and that it is a
// Structure whose length is a multiple of 8 within limits.max_message, and
// returns the number of value bytes that follow the header.
std::size_t message_body_length(const std::uint8_t header[kHeaderBytes], std::uint32_t expected_tag,
                                const Limits& limits = {});

}  // namespace conn_crypto::kms::ttlv
