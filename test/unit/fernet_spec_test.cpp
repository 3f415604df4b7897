// The Fernet specification's own vectors, and the strict-base64 proposal's.
#include "errors.hpp"
#include "keyring.hpp"
#include "spec_helpers.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace conn_crypto;
using test_helpers::load_vectors;
using test_helpers::parse_rfc3339;

namespace {

std::string decrypt_to_string(const Keyring& ring, const std::string& token, std::optional<std::int64_t> ttl,
                              std::int64_t now) {
    std::vector<std::uint8_t> out(plaintext_bound(token.size()) + 1);
    Decrypted d = ring.decrypt(token, out.data(), ttl, now);
    return std::string(out.begin(), out.begin() + static_cast<long>(d.length));
}

}  // namespace

TEST(FernetSpec, GenerateVectorsProduceTheExactToken) {
    auto vectors = load_vectors("generate.json");
    ASSERT_FALSE(vectors.empty());
    for (const auto& v : vectors) {
        Keyring ring = Keyring::parse(v["secret"].get<std::string>());
        std::vector<std::uint8_t> iv;
        for (const auto& b : v["iv"]) iv.push_back(b.get<std::uint8_t>());
        ASSERT_EQ(iv.size(), 16u);
        std::string src = v["src"];
        std::string out(token_length(src.size()), '\0');
        ring.encrypt(reinterpret_cast<const std::uint8_t*>(src.data()), src.size(), out.data(),
                     static_cast<std::uint64_t>(parse_rfc3339(v["now"])), iv.data());
        EXPECT_EQ(out, v["token"].get<std::string>());
    }
}

TEST(FernetSpec, VerifyVectorsDecrypt) {
    auto vectors = load_vectors("verify.json");
    ASSERT_FALSE(vectors.empty());
    for (const auto& v : vectors) {
        Keyring ring = Keyring::parse(v["secret"].get<std::string>());
        EXPECT_EQ(decrypt_to_string(ring, v["token"], v["ttl_sec"].get<std::int64_t>(), parse_rfc3339(v["now"])),
                  v["src"].get<std::string>());
    }
}

class InvalidVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(InvalidVectors, AreRejectedWithTheRightCategory) {
    auto vectors = load_vectors(GetParam());
    ASSERT_FALSE(vectors.empty());
    for (const auto& v : vectors) {
        std::string desc = v["desc"];
        SCOPED_TRACE(desc);
        Keyring ring = Keyring::parse(v["secret"].get<std::string>());
        try {
            decrypt_to_string(ring, v["token"], v["ttl_sec"].get<std::int64_t>(), parse_rfc3339(v["now"]));
            ADD_FAILURE() << "accepted an invalid token: " << desc;
        } catch (const Error& e) {
            ErrorKind want = ErrorKind::MalformedToken;
            if (desc == "incorrect mac" || desc == "payload padding error" ||
                desc.find("incorrect IV") != std::string::npos)
                want = ErrorKind::InvalidToken;
            else if (desc.find("far-future") != std::string::npos)
                want = ErrorKind::FutureTimestamp;
            else if (desc.find("expired") != std::string::npos)
                want = ErrorKind::Expired;
            EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(want)) << e.what();
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Spec, InvalidVectors,
                         ::testing::Values("invalid.json", "invalid_pr11_strict_b64.json"));
