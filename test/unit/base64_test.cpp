#include "base64.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace conn_crypto;

namespace {
std::optional<std::string> dec(const std::string& s, base64::Alphabet a = base64::Alphabet::UrlSafe) {
    std::vector<std::uint8_t> out(base64::decoded_bound(s.size()));
    auto n = base64::decode(s, a, out.data());
    if (!n) return std::nullopt;
    return std::string(out.begin(), out.begin() + static_cast<long>(*n));
}
std::string enc(const std::string& s) {
    std::string out(base64::encoded_length(s.size()), '\0');
    base64::encode_urlsafe(reinterpret_cast<const std::uint8_t*>(s.data()), s.size(), out.data());
    return out;
}
}  // namespace

TEST(Base64, Rfc4648Vectors) {
    EXPECT_EQ(enc(""), "");
    EXPECT_EQ(enc("f"), "Zg==");
    EXPECT_EQ(enc("fo"), "Zm8=");
    EXPECT_EQ(enc("foo"), "Zm9v");
    EXPECT_EQ(enc("foob"), "Zm9vYg==");
    EXPECT_EQ(enc("fooba"), "Zm9vYmE=");
    EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
    for (const char* s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) EXPECT_EQ(dec(enc(s)), std::string(s));
}

TEST(Base64, UrlSafeAlphabetOnlyForTokens) {
    EXPECT_EQ(dec("-_-_"), std::string("\xfb\xff\xbf", 3));
    EXPECT_EQ(dec("+/+/"), std::nullopt);
    EXPECT_EQ(dec("+/+/", base64::Alphabet::UrlSafeOrStd), std::string("\xfb\xff\xbf", 3));
}

TEST(Base64, RejectsMalformedInput) {
    EXPECT_EQ(dec("Zg="), std::nullopt);     // padding that does not complete a group
    EXPECT_EQ(dec("Zg==="), std::nullopt);   // too much padding
    EXPECT_EQ(dec("Z"), std::nullopt);       // a lone character
    EXPECT_EQ(dec("Zg==Zg=="), std::nullopt);  // data after padding
    EXPECT_EQ(dec("Zh=="), std::nullopt);    // non-zero unused bits
    EXPECT_EQ(dec("Zm 9v"), std::nullopt);   // inner whitespace
    EXPECT_EQ(dec("Zm9v\x80"), std::nullopt);
    EXPECT_EQ(dec("Zg"), std::string("f"));  // missing padding tolerated
    EXPECT_EQ(dec("  Zm8=\n"), std::string("fo"));
}
