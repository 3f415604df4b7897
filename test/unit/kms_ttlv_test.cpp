// KMIP TTLV encoder/decoder: the encoding examples of the KMIP 1.x
// specification (section 9.1.2), round trips, and hostile inputs.
#include "errors.hpp"
#include "kms/ttlv.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace conn_crypto;
using namespace conn_crypto::kms::ttlv;

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes enc(const Item& it) {
    SecureBytes s = encode(it);
    return Bytes(s.begin(), s.end());
}

Item dec(const Bytes& b, const Limits& l = {}) { return decode(b.data(), b.size(), l); }

// Expects decode to throw Error whose message starts with "KMS malformed TTLV".
void expect_malformed(const Bytes& b, const char* fragment = nullptr, const Limits& l = {}) {
    try {
        dec(b, l);
        FAIL() << "decode accepted bad input";
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_EQ(m.rfind("KMS malformed TTLV", 0), 0u) << m;
        EXPECT_EQ(e.kind(), ErrorKind::Crypto);
        if (fragment) EXPECT_NE(m.find(fragment), std::string::npos) << m;
    }
}

constexpr std::uint32_t kT = 0x420020;  // the tag the specification's examples use

}  // namespace

// --- Examples of KMIP 1.x section 9.1.2, byte for byte -----------------------

TEST(KmsTtlv, SpecExampleInteger) {
    Bytes want = {0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00};
    EXPECT_EQ(enc(Item::integer(kT, 8)), want);
    Item it = dec(want);
    EXPECT_EQ(it.tag, kT);
    EXPECT_EQ(it.type, Type::Integer);
    EXPECT_EQ(it.number, 8);
}

TEST(KmsTtlv, SpecExampleLongInteger) {
    Bytes want = {0x42, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x08, 0x01, 0xB6, 0x9B, 0x4B, 0xA5, 0x74, 0x92, 0x00};
    EXPECT_EQ(enc(Item::long_integer(kT, 123456789000000000LL)), want);
    EXPECT_EQ(dec(want).number, 123456789000000000LL);
}

TEST(KmsTtlv, SpecExampleBigInteger) {
    Bytes want = {0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
                  0x03, 0xFD, 0x35, 0xEB, 0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00};
    SecureBytes value(want.begin() + 8, want.end());
    EXPECT_EQ(enc(Item::big_integer(kT, value)), want);
    Item it = dec(want);
    EXPECT_EQ(it.type, Type::BigInteger);
    EXPECT_EQ(it.bytes, value);
}

TEST(KmsTtlv, SpecExampleEnumeration) {
    Bytes want = {0x42, 0x00, 0x20, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00};
    EXPECT_EQ(enc(Item::enumeration(kT, 255)), want);
    EXPECT_EQ(dec(want).number, 255);
}

TEST(KmsTtlv, SpecExampleBoolean) {
    Bytes want = {0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
    EXPECT_EQ(enc(Item::boolean(kT, true)), want);
    EXPECT_EQ(dec(want).number, 1);
}

TEST(KmsTtlv, SpecExampleTextString) {
    Bytes want = {0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x0B, 'H',  'e',  'l',  'l',
                  'o',  ' ',  'W',  'o',  'r',  'l',  'd',  0x00, 0x00, 0x00, 0x00, 0x00};
    EXPECT_EQ(enc(Item::text_string(kT, "Hello World")), want);
    EXPECT_EQ(dec(want).text, "Hello World");
}

TEST(KmsTtlv, SpecExampleByteString) {
    Bytes want = {0x42, 0x00, 0x20, 0x08, 0x00, 0x00, 0x00, 0x03, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00};
    std::uint8_t v[] = {1, 2, 3};
    EXPECT_EQ(enc(Item::byte_string(kT, v, 3)), want);
    EXPECT_EQ(dec(want).bytes, SecureBytes(v, v + 3));
}

TEST(KmsTtlv, SpecExampleDateTime) {
    // Friday, March 14, 2008, 11:56:40 GMT
    Bytes want = {0x42, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x47, 0xDA, 0x67, 0xF8};
    EXPECT_EQ(enc(Item::date_time(kT, 1205495800)), want);
    EXPECT_EQ(dec(want).number, 1205495800);
}

TEST(KmsTtlv, SpecExampleInterval) {
    // 10 days
    Bytes want = {0x42, 0x00, 0x20, 0x0A, 0x00, 0x00, 0x00, 0x04, 0x00, 0x0D, 0x2F, 0x00, 0x00, 0x00, 0x00, 0x00};
    EXPECT_EQ(enc(Item::interval(kT, 10 * 24 * 3600)), want);
    EXPECT_EQ(dec(want).number, 864000);
}

TEST(KmsTtlv, SpecExampleStructure) {
    // An Enumeration 254 (tag 420004) followed by an Integer 255 (tag 420005).
    Bytes want = {0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x04, 0x05, 0x00, 0x00, 0x00, 0x04,
                  0x00, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x04,
                  0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00};
    Item s = Item::structure(kT, {Item::enumeration(0x420004, 254), Item::integer(0x420005, 255)});
    EXPECT_EQ(enc(s), want);
    Item d = dec(want);
    ASSERT_EQ(d.type, Type::Structure);
    ASSERT_EQ(d.items.size(), 2u);
    EXPECT_EQ(d.items[0].tag, 0x420004u);
    EXPECT_EQ(d.items[0].number, 254);
    EXPECT_EQ(d.items[1].type, Type::Integer);
    EXPECT_EQ(d.items[1].number, 255);
    EXPECT_EQ(d.find(0x420005), &d.items[1]);
    EXPECT_EQ(d.find(0x420006), nullptr);
}

// A KMIP request header as it goes on the wire: Protocol Version 1.4, Batch
// Count 1, written out by hand from the encoding rules.
TEST(KmsTtlv, RequestHeaderLayout) {
    Bytes want = {
        0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00, 0x38,                          // Request Header, 56 bytes
        0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20,                          // Protocol Version, 32 bytes
        0x42, 0x00, 0x6A, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0,  // Major 1
        0x42, 0x00, 0x6B, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 4, 0, 0, 0, 0,  // Minor 4
        0x42, 0x00, 0x0D, 0x02, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0,  // Batch Count 1
    };
    Item h = Item::structure(0x420077, {Item::structure(0x420069, {Item::integer(0x42006A, 1), Item::integer(0x42006B, 4)}),
                                        Item::integer(0x42000D, 1)});
    EXPECT_EQ(enc(h), want);
    EXPECT_EQ(enc(dec(want)), want);
}

// --- Round trips ---------------------------------------------------------------

TEST(KmsTtlv, RoundTripAllTypes) {
    std::uint8_t raw[17];
    for (int i = 0; i < 17; ++i) raw[i] = static_cast<std::uint8_t>(i * 13);
    Item s = Item::structure(0x420078, {
        Item::integer(0x420001, -5),
        Item::integer(0x420001, INT32_MIN),
        Item::long_integer(0x420002, INT64_MIN),
        Item::big_integer(0x420003, SecureBytes(16, 0xAB)),
        Item::enumeration(0x420004, 0xFFFFFFFFu),
        Item::boolean(0x420005, false),
        Item::text_string(0x420006, ""),
        Item::text_string(0x420006, "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x91"),
        Item::byte_string(0x420007, raw, 17),
        Item::byte_string(0x420007, nullptr, 0),
        Item::date_time(0x420008, -1),
        Item::interval(0x420009, 0),
        Item::structure(0x42000A, {}),
        Item::structure(0x42000B, {Item::structure(0x42000C, {Item::byte_string(0x420007, raw, 8)})}),
    });
    Bytes b = enc(s);
    EXPECT_EQ(b.size() % 8, 0u);
    Item d = dec(b);
    ASSERT_EQ(d.items.size(), s.items.size());
    for (std::size_t i = 0; i < s.items.size(); ++i) {
        EXPECT_EQ(d.items[i].tag, s.items[i].tag) << i;
        EXPECT_EQ(d.items[i].type, s.items[i].type) << i;
        EXPECT_EQ(d.items[i].number, s.items[i].number) << i;
        EXPECT_EQ(d.items[i].text, s.items[i].text) << i;
        EXPECT_EQ(d.items[i].bytes, s.items[i].bytes) << i;
        EXPECT_EQ(d.items[i].items.size(), s.items[i].items.size()) << i;
    }
    EXPECT_EQ(enc(d), b);
}

TEST(KmsTtlv, ByteStringPaddingForEveryLength) {
    for (std::size_t n = 0; n <= 40; ++n) {
        Bytes v(n, 0x5A);
        Bytes b = enc(Item::byte_string(0x4200C2, v.data(), n));
        EXPECT_EQ(b.size(), 8 + padded(n)) << n;
        Item d = dec(b);
        EXPECT_EQ(d.bytes.size(), n);
    }
}

TEST(KmsTtlv, RequireAndFindTyped) {
    Item s = Item::structure(kT, {Item::integer(0x420001, 1)});
    EXPECT_EQ(s.require(0x420001, Type::Integer, "x").number, 1);
    EXPECT_THROW(s.require(0x420001, Type::Enumeration, "x"), Error);
    EXPECT_THROW(s.require(0x420002, Type::Integer, "x"), Error);
    EXPECT_EQ(s.find_typed(0x420002, Type::Integer, "x"), nullptr);
}

TEST(KmsTtlv, EncoderRejectsBadItems) {
    EXPECT_THROW(encode(Item::integer(0x1000000, 1)), Error);  // tag over 24 bits
    Item b = Item::boolean(kT, true);
    b.number = 2;
    EXPECT_THROW(encode(b), Error);
    Item e = Item::enumeration(kT, 1);
    e.number = -1;
    EXPECT_THROW(encode(e), Error);
    EXPECT_THROW(encode(Item::big_integer(kT, SecureBytes(5, 1))), Error);
}

TEST(KmsTtlv, MessageBodyLength) {
    std::uint8_t h[8] = {0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x01, 0x00};
    EXPECT_EQ(message_body_length(h, 0x42007B), 256u);
    EXPECT_THROW(message_body_length(h, 0x420078), Error);  // another tag
    std::uint8_t odd[8] = {0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x01, 0x03};
    EXPECT_THROW(message_body_length(odd, 0x42007B), Error);
    std::uint8_t huge[8] = {0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF8};
    EXPECT_THROW(message_body_length(huge, 0x42007B), Error);
    std::uint8_t not_struct[8] = {0x42, 0x00, 0x7B, 0x08, 0x00, 0x00, 0x00, 0x08};
    EXPECT_THROW(message_body_length(not_struct, 0x42007B), Error);
}

// --- Hostile inputs ------------------------------------------------------------

TEST(KmsTtlv, RejectsEmptyAndTruncated) {
    expect_malformed({});
    Bytes full = enc(Item::structure(kT, {Item::text_string(0x420001, "Hello World"), Item::integer(0x420002, 7)}));
    for (std::size_t cut = 1; cut < full.size(); ++cut) {
        Bytes b(full.begin(), full.begin() + static_cast<long>(cut));
        expect_malformed(b);
    }
}

TEST(KmsTtlv, RejectsTrailingBytes) {
    Bytes b = enc(Item::integer(kT, 1));
    b.insert(b.end(), 8, 0);
    expect_malformed(b, "trailing");
}

TEST(KmsTtlv, RejectsNonZeroPadding) {
    Bytes b = enc(Item::text_string(kT, "abc"));
    b.back() = 0x01;
    expect_malformed(b, "padding");
    Bytes i = enc(Item::integer(kT, 1));
    i[15] = 0x80;
    expect_malformed(i, "padding");
}

TEST(KmsTtlv, RejectsWrongFixedLengths) {
    // Integer with length 8, Boolean with length 4, Interval with length 8.
    expect_malformed({0x42, 0x00, 0x20, 0x02, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1}, "length");
    expect_malformed({0x42, 0x00, 0x20, 0x06, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0}, "length");
    expect_malformed({0x42, 0x00, 0x20, 0x0A, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1}, "length");
    // Big Integer of 4 bytes.
    expect_malformed({0x42, 0x00, 0x20, 0x04, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0}, "big integer");
}

TEST(KmsTtlv, RejectsBadValues) {
    // Boolean 2.
    expect_malformed({0x42, 0x00, 0x20, 0x06, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2}, "boolean");
    // Unknown types 0x00 and 0x0B.
    expect_malformed({0x42, 0x00, 0x20, 0x00, 0, 0, 0, 0});
    expect_malformed({0x42, 0x00, 0x20, 0x0B, 0, 0, 0, 0});
    // Invalid UTF-8: lone continuation byte, overlong '/', surrogate.
    expect_malformed({0x42, 0x00, 0x20, 0x07, 0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0}, "UTF-8");
    expect_malformed({0x42, 0x00, 0x20, 0x07, 0, 0, 0, 2, 0xC0, 0xAF, 0, 0, 0, 0, 0, 0}, "UTF-8");
    expect_malformed({0x42, 0x00, 0x20, 0x07, 0, 0, 0, 3, 0xED, 0xA0, 0x80, 0, 0, 0, 0, 0}, "UTF-8");
}

TEST(KmsTtlv, RejectsHugeLengths) {
    // A byte string claiming 4 GiB - 1, and one whose padding runs past the end.
    expect_malformed({0x42, 0x00, 0x20, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8}, "exceeds");
    expect_malformed({0x42, 0x00, 0x20, 0x08, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "padding");
    // A structure whose length exceeds what follows.
    expect_malformed({0x42, 0x00, 0x20, 0x01, 0x7F, 0xFF, 0xFF, 0xF8, 0x42, 0x00, 0x04, 0x02, 0, 0, 0, 4}, "exceeds");
    // A child whose length runs past the end of its parent structure.
    Bytes b = enc(Item::structure(kT, {Item::byte_string(0x420001, reinterpret_cast<const std::uint8_t*>("abcdefgh"), 8),
                                       Item::integer(0x420002, 1)}));
    b[7] = 0x10;  // parent claims 16 bytes: the first child only
    b.resize(8 + 16);
    Bytes c = b;
    c[15] = 0x09;  // first child claims 9 bytes: padded to 16, runs past the parent
    expect_malformed(c);
    // A structure length that is not a multiple of 8.
    Bytes d = enc(Item::structure(kT, {Item::integer(0x420001, 1)}));
    d[7] = 0x0C;
    d.resize(8 + 12);
    expect_malformed(d);
}

TEST(KmsTtlv, RejectsMessagesOverTheSizeLimit) {
    Bytes v(2000, 1);
    Bytes b = enc(Item::byte_string(kT, v.data(), v.size()));
    Limits small;
    small.max_message = 1024;
    expect_malformed(b, "limit", small);
    EXPECT_NO_THROW(dec(b));
    Bytes big(Limits{}.max_message + 8, 0);
    expect_malformed(big, "limit");
}

TEST(KmsTtlv, RejectsDeepNesting) {
    auto nested = [](std::size_t depth) {
        Item it = Item::integer(0x420001, 1);
        for (std::size_t i = 0; i < depth; ++i) it = Item::structure(kT, {it});
        return enc(it);
    };
    EXPECT_NO_THROW(dec(nested(16)));
    expect_malformed(nested(17), "nested");
    // Hand-made deep nesting: 10000 structure headers, each claiming the rest.
    std::size_t levels = 10000;
    Bytes b(levels * 8);
    for (std::size_t i = 0; i < levels; ++i) {
        std::uint32_t len = static_cast<std::uint32_t>((levels - i - 1) * 8);
        std::uint8_t h[8] = {0x42, 0x00, 0x20, 0x01, static_cast<std::uint8_t>(len >> 24),
                             static_cast<std::uint8_t>(len >> 16), static_cast<std::uint8_t>(len >> 8),
                             static_cast<std::uint8_t>(len)};
        std::copy(h, h + 8, b.begin() + static_cast<long>(i * 8));
    }
    expect_malformed(b, "nested");
}

TEST(KmsTtlv, NeverReadsOutOfBoundsOnMutations) {
    // Every single-byte mutation of a real-looking message either decodes or
    // throws Error (run under ASan to catch out-of-bounds reads).
    Bytes msg = enc(Item::structure(0x42007B, {
        Item::structure(0x42007A, {Item::structure(0x420069, {Item::integer(0x42006A, 1), Item::integer(0x42006B, 4)}),
                                   Item::date_time(0x420092, 1700000000), Item::integer(0x42000D, 1)}),
        Item::structure(0x42000F, {Item::enumeration(0x42005C, 0x1F), Item::enumeration(0x42007F, 1),
                                   Item::enumeration(0x42007E, 1), Item::text_string(0x42007D, "Could not locate")}),
    }));
    const std::uint8_t values[] = {0x00, 0x01, 0x07, 0x08, 0x0B, 0x7F, 0x80, 0xFF};
    for (std::size_t i = 0; i < msg.size(); ++i) {
        for (std::uint8_t v : values) {
            Bytes m = msg;
            m[i] = v;
            try {
                dec(m);
            } catch (const Error&) {
            }
        }
    }
}
