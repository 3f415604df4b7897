// FernetKey against an independent construction (a fresh OpenSSL context per
// token, OpenSSL's own PKCS7 and one-shot HMAC): the key's contexts are set up
// once and chained across tokens, so many tokens in a row, both directions
// interleaved, padding failures in between and large (heap) tokens must all
// give exactly the bytes a from-scratch Fernet gives. Also the inline token
// buffer of ParsedToken.
#include "base64.hpp"
#include "errors.hpp"
#include "fernet.hpp"

#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace conn_crypto;

namespace {

using Bytes = std::vector<std::uint8_t>;

struct RawKey {
    std::uint8_t k[32];
    explicit RawKey(std::mt19937& rng) {
        for (auto& b : k) b = static_cast<std::uint8_t>(rng());
    }
};

std::string b64(const Bytes& raw) {
    std::string s(base64::encoded_length(raw.size()), '\0');
    base64::encode_urlsafe(raw.data(), raw.size(), s.data());
    return s;
}

// Fernet from scratch. pad = false: the plaintext is taken as already padded.
std::string reference_token(const RawKey& key, const Bytes& pt, std::uint64_t ts, const std::uint8_t iv[16],
                            bool pad = true) {
    Bytes raw(25 + pt.size() + 16 + 32);
    raw[0] = 0x80;
    for (int i = 0; i < 8; ++i) raw[1 + i] = static_cast<std::uint8_t>(ts >> (56 - 8 * i));
    std::memcpy(raw.data() + 9, iv, 16);
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    EXPECT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_128_cbc(), nullptr, key.k + 16, iv), 1);
    EVP_CIPHER_CTX_set_padding(ctx, pad ? 1 : 0);
    EXPECT_EQ(EVP_EncryptUpdate(ctx, raw.data() + 25, &l1, pt.data(), static_cast<int>(pt.size())), 1);
    EXPECT_EQ(EVP_EncryptFinal_ex(ctx, raw.data() + 25 + l1, &l2), 1);
    EVP_CIPHER_CTX_free(ctx);
    raw.resize(25 + static_cast<std::size_t>(l1 + l2) + 32);
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), key.k, 16, raw.data(), raw.size() - 32, raw.data() + raw.size() - 32, &mac_len);
    return b64(raw);
}

Bytes random_bytes_of(std::mt19937& rng, std::size_t n) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<std::uint8_t>(rng());
    return b;
}

std::string encrypt_with(const FernetKey& key, const Bytes& pt, std::uint64_t ts, const std::uint8_t iv[16]) {
    std::string out(token_length(pt.size()), '\0');
    key.encrypt(pt.data(), pt.size(), ts, iv, out.data());
    return out;
}

Bytes decrypt_with(const FernetKey& key, const std::string& tok) {
    ParsedToken p = parse_token(tok);
    EXPECT_TRUE(key.authenticates(p));
    Bytes out(plaintext_bound(tok.size()));
    out.resize(key.decrypt_authenticated(p, out.data()));
    return out;
}

}  // namespace

TEST(FernetKey, ManyTokensInARowMatchAFreshContextPerToken) {
    std::mt19937 rng(42);
    RawKey k1(rng), k2(rng);
    FernetKey key1(k1.k), key2(k2.k);
    std::vector<std::size_t> lengths;
    for (std::size_t n = 0; n <= 100; ++n) lengths.push_back(n);
    for (std::size_t n : {1000, 1024, 1100, 3000, 70000}) lengths.push_back(n);  // heap buffers
    for (int round = 0; round < 3; ++round)
        for (std::size_t n : lengths) {
            const Bytes pt = random_bytes_of(rng, n);
            const Bytes iv = random_bytes_of(rng, 16);
            const std::uint64_t ts = rng();
            const FernetKey& key = (n + round) % 3 ? key1 : key2;
            const RawKey& raw = (n + round) % 3 ? k1 : k2;
            const std::string tok = encrypt_with(key, pt, ts, iv.data());
            ASSERT_EQ(tok, reference_token(raw, pt, ts, iv.data())) << n;
            // Decrypt a token of the other direction's making, then our own.
            const Bytes pt2 = random_bytes_of(rng, (n * 7) % 90);
            const Bytes iv2 = random_bytes_of(rng, 16);
            ASSERT_EQ(decrypt_with(key, reference_token(raw, pt2, ts, iv2.data())), pt2) << n;
            ASSERT_EQ(decrypt_with(key, tok), pt) << n;
        }
}

TEST(FernetKey, PaddingIsCheckedExactlyAndFailuresLeaveTheKeyUsable) {
    std::mt19937 rng(7);
    RawKey k(rng);
    FernetKey key(k.k);
    const Bytes iv = random_bytes_of(rng, 16);
    for (int blocks = 1; blocks <= 2; ++blocks)
        for (int last = 0; last < 256; ++last)
            for (int variant = 0; variant < 3; ++variant) {
                // Every value of the last byte; variant 1 also spoils the byte
                // before it, variant 2 repeats it over the whole last block.
                Bytes padded = random_bytes_of(rng, 16 * static_cast<std::size_t>(blocks));
                const std::size_t n = padded.size();
                if (variant == 2) std::memset(padded.data() + n - 16, last, 16);
                if (last >= 1 && last <= 16)
                    for (int i = 0; i < last; ++i) padded[n - 1 - static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(last);
                padded[n - 1] = static_cast<std::uint8_t>(last);
                bool valid = last >= 1 && last <= 16;
                if (variant == 1 && last >= 2 && last <= 16) {
                    padded[n - 2] ^= 0x40;
                    valid = false;
                }
                const std::string tok = reference_token(k, padded, 1, iv.data(), false);
                ParsedToken p = parse_token(tok);
                ASSERT_TRUE(key.authenticates(p));
                Bytes out(plaintext_bound(tok.size()));
                if (valid) {
                    ASSERT_EQ(key.decrypt_authenticated(p, out.data()), n - static_cast<std::size_t>(last));
                    ASSERT_EQ(0, std::memcmp(out.data(), padded.data(), n - static_cast<std::size_t>(last)));
                } else {
                    try {
                        key.decrypt_authenticated(p, out.data());
                        FAIL() << "accepted pad byte " << last << " variant " << variant;
                    } catch (const Error& e) {
                        ASSERT_EQ(e.kind(), ErrorKind::InvalidToken);
                    }
                }
                // The next token, in both directions, is unaffected.
                const Bytes pt = random_bytes_of(rng, static_cast<std::size_t>(last % 40));
                const Bytes iv2 = random_bytes_of(rng, 16);
                ASSERT_EQ(decrypt_with(key, reference_token(k, pt, 2, iv2.data())), pt);
                ASSERT_EQ(encrypt_with(key, pt, 3, iv2.data()), reference_token(k, pt, 3, iv2.data()));
            }
}

TEST(ParsedToken, InlineAndHeapBuffersCopyAndMove) {
    std::mt19937 rng(3);
    RawKey k(rng);
    const Bytes iv = random_bytes_of(rng, 16);
    for (std::size_t n : {0, 40, 900, 1000, 2000}) {  // raw sizes either side of TokenBytes::kInline
        const std::string tok = reference_token(k, random_bytes_of(rng, n), 99, iv.data());
        Bytes raw(base64::decoded_bound(tok.size()));
        raw.resize(*base64::decode(tok, base64::Alphabet::UrlSafe, raw.data()));

        ParsedToken p = parse_token(tok);
        ASSERT_EQ(p.raw.size(), raw.size());
        ASSERT_EQ(0, std::memcmp(p.raw.data(), raw.data(), raw.size()));
        EXPECT_EQ(p.timestamp, 99u);

        ParsedToken copy = p;
        ParsedToken moved = std::move(p);
        ParsedToken assigned;
        assigned = copy;
        ParsedToken move_assigned;
        move_assigned = std::move(copy);
        for (const ParsedToken* q : {&moved, &assigned, &move_assigned}) {
            ASSERT_EQ(q->raw.size(), raw.size());
            ASSERT_EQ(0, std::memcmp(q->raw.data(), raw.data(), raw.size()));
            EXPECT_EQ(q->ciphertext_len(), raw.size() - 57);
            EXPECT_EQ(0, std::memcmp(q->iv(), iv.data(), 16));
        }
        auto t = try_parse_token(tok);
        ASSERT_TRUE(t.has_value());
        ASSERT_EQ(0, std::memcmp(t->raw.data(), raw.data(), raw.size()));
    }
    const char* why = nullptr;
    EXPECT_FALSE(try_parse_token("not a token!", &why).has_value());
    EXPECT_STREQ(why, "not url-safe base64");
    EXPECT_FALSE(try_parse_token(std::string(200, 'A'), &why).has_value());
    EXPECT_STREQ(why, "token has an unknown version byte");
}
