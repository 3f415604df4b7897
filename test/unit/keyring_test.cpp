// MultiFernet behaviour of the keyring, key parsing and TTL arithmetic.
#include "base64.hpp"
#include "errors.hpp"
#include "keyring.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <set>

#include <sys/wait.h>
#include <unistd.h>
#include <limits>
#include <string>
#include <vector>

using namespace conn_crypto;

namespace {

const std::string kKey1 = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const std::string kKey2 = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";  // "abcdefghijklmnopqrstuvwxyz123456"

std::string encrypt(const Keyring& ring, const std::string& pt, std::optional<std::uint64_t> ts = std::nullopt) {
    std::string out(token_length(pt.size()), '\0');
    ring.encrypt(reinterpret_cast<const std::uint8_t*>(pt.data()), pt.size(), out.data(), ts);
    return out;
}

std::string decrypt(const Keyring& ring, const std::string& tok, std::optional<std::int64_t> ttl = std::nullopt,
                    std::int64_t now = unix_now(), std::size_t* key = nullptr) {
    std::vector<std::uint8_t> out(plaintext_bound(tok.size()) + 1);
    Decrypted d = ring.decrypt(tok, out.data(), ttl, now);
    if (key) *key = d.key_index;
    return std::string(out.begin(), out.begin() + static_cast<long>(d.length));
}

ErrorKind kind_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.kind();
    }
    ADD_FAILURE() << "no error raised";
    return ErrorKind::Crypto;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Keyring, RoundTripsEveryLengthAroundBlockBoundaries) {
    Keyring ring = Keyring::parse(kKey1);
    for (std::size_t n = 0; n <= 70; ++n) {
        std::string pt(n, 'x');
        for (std::size_t i = 0; i < n; ++i) pt[i] = static_cast<char>(i * 7 + 1);
        std::string tok = encrypt(ring, pt);
        EXPECT_EQ(tok.size(), token_length(n));
        EXPECT_EQ(decrypt(ring, tok), pt);
    }
}

TEST(Keyring, FirstKeyEncryptsEveryKeyDecrypts) {
    Keyring old_ring = Keyring::parse(kKey2);
    Keyring ring = Keyring::parse(kKey1 + "," + kKey2);
    std::string old_tok = encrypt(old_ring, "secret");
    std::size_t idx = 99;
    EXPECT_EQ(decrypt(ring, old_tok, std::nullopt, unix_now(), &idx), "secret");
    EXPECT_EQ(idx, 1u);
    std::string new_tok = encrypt(ring, "secret");
    EXPECT_EQ(ring.key_index(new_tok), std::optional<std::size_t>(0));
    EXPECT_EQ(kind_of([&] { decrypt(old_ring, new_tok); }), ErrorKind::InvalidToken);
}

TEST(Keyring, RotateKeepsTimestampAndMovesToPrimary) {
    Keyring old_ring = Keyring::parse(kKey2);
    Keyring ring = Keyring::parse(kKey1 + "," + kKey2);
    std::string tok = encrypt(old_ring, "p@ss", 499162800);
    std::string out(Keyring::rotate_bound(tok.size()), '\0');
    out.resize(ring.rotate(tok, out.data()));
    EXPECT_EQ(ring.key_index(out), std::optional<std::size_t>(0));
    EXPECT_EQ(ring.extract_timestamp(out), 499162800u);
    EXPECT_EQ(decrypt(ring, out), "p@ss");
    EXPECT_NE(out, tok);
}

TEST(Keyring, KeyIndexNeverThrowsOnBadTokens) {
    Keyring ring = Keyring::parse(kKey1);
    EXPECT_EQ(ring.key_index(""), std::nullopt);
    EXPECT_EQ(ring.key_index("not a token"), std::nullopt);
    EXPECT_EQ(ring.key_index(encrypt(Keyring::parse(kKey2), "x")), std::nullopt);
}

TEST(Keyring, ExtractTimestampAuthenticatesFirst) {
    Keyring ring = Keyring::parse(kKey1);
    std::string foreign = encrypt(Keyring::parse(kKey2), "x", 1234);
    EXPECT_EQ(kind_of([&] { ring.extract_timestamp(foreign); }), ErrorKind::InvalidToken);
    EXPECT_EQ(ring.extract_timestamp(encrypt(ring, "x", 1234)), 1234u);
}

TEST(KeyParsing, AcceptsBothAlphabetsPaddingAndWhitespace) {
    // 0xfb 0xff ... encodes with '+' '/' in standard and '-' '_' in url-safe base64.
    std::vector<std::uint8_t> raw(32, 0xfb);
    raw[1] = 0xff;
    std::string url(base64::encoded_length(32), '\0');
    base64::encode_urlsafe(raw.data(), raw.size(), url.data());
    std::string std_alpha = url;
    for (char& c : std_alpha) c = c == '-' ? '+' : c == '_' ? '/' : c;
    ASSERT_NE(url, std_alpha);
    for (const std::string& k : {url, std_alpha, url.substr(0, 43), "  " + url + "\n"}) {
        auto key = Keyring::decode_key(k);
        ASSERT_TRUE(key.has_value()) << k;
        EXPECT_TRUE(std::equal(key->begin(), key->end(), raw.begin()));
    }
    Keyring a = Keyring::parse(url), b = Keyring::parse(" " + std_alpha + " , " + kKey1);
    EXPECT_EQ(b.size(), 2u);
    EXPECT_EQ(decrypt(b, encrypt(a, "same key")), "same key");
}

TEST(KeyParsing, ErrorsNameThePositionAndNeverTheKey) {
    std::string bad = "c2hvcnQ=";  // 5 bytes
    std::string msg = error_of([&] { Keyring::parse(kKey1 + "," + bad + "," + kKey2); });
    EXPECT_EQ(msg, "key 2 of 3 is not 32 url-safe base64-encoded bytes");
    EXPECT_EQ(msg.find(bad), std::string::npos);
    EXPECT_EQ(kind_of([&] { Keyring::parse(kKey1 + ","); }), ErrorKind::BadKey);
    EXPECT_EQ(kind_of([&] { Keyring::parse(""); }), ErrorKind::NoKey);
    EXPECT_EQ(kind_of([&] { Keyring::parse("   "); }), ErrorKind::NoKey);
    EXPECT_EQ(kind_of([&] { Keyring::parse(kKey1.substr(0, 40)); }), ErrorKind::BadKey);
    EXPECT_EQ(kind_of([&] { Keyring::parse(kKey1 + "AAAA"); }), ErrorKind::BadKey);
    EXPECT_EQ(kind_of([&] { Keyring::parse("%" + kKey1.substr(1)); }), ErrorKind::BadKey);
}

TEST(KeyParsing, LimitsTheNumberOfKeys) {
    std::string many = kKey1;
    for (std::size_t i = 1; i < kMaxKeys; ++i) many += "," + kKey2;
    Keyring ring = Keyring::parse(many);
    EXPECT_EQ(ring.size(), kMaxKeys);
    // The last key still decrypts (linear search over every key).
    std::string tok = encrypt(Keyring::parse(kKey2), "deep");
    std::size_t idx = 0;
    EXPECT_EQ(decrypt(ring, tok, std::nullopt, unix_now(), &idx), "deep");
    EXPECT_EQ(idx, 1u);
    EXPECT_EQ(kind_of([&] { Keyring::parse(many + "," + kKey1); }), ErrorKind::BadKey);
}

TEST(KeyParsing, GeneratedKeysAre44UrlSafeCharacters) {
    std::string a = Keyring::generate_key(), b = Keyring::generate_key();
    EXPECT_EQ(a.size(), 44u);
    EXPECT_NE(a, b);
    EXPECT_EQ(a.find_first_of("+/"), std::string::npos);
    EXPECT_EQ(a.back(), '=');
    Keyring::parse(a);
}

TEST(Tokens, TolerateWhitespaceAndMissingPadding) {
    Keyring ring = Keyring::parse(kKey1);
    std::string tok = encrypt(ring, "hello");
    ASSERT_EQ(tok.back(), '=');
    std::string unpadded = tok.substr(0, tok.find('='));
    EXPECT_EQ(decrypt(ring, unpadded), "hello");
    EXPECT_EQ(decrypt(ring, " \n" + tok + "\t "), "hello");
    EXPECT_EQ(kind_of([&] { decrypt(ring, tok + "AA"); }), ErrorKind::MalformedToken);
    EXPECT_EQ(kind_of([&] { decrypt(ring, tok + "="); }), ErrorKind::MalformedToken);
    EXPECT_EQ(kind_of([&] { decrypt(ring, tok.substr(0, 10) + " " + tok.substr(10)); }), ErrorKind::MalformedToken);
}

TEST(Tokens, EveryTruncationAndBitFlipIsRejectedCleanly) {
    Keyring ring = Keyring::parse(kKey1);
    std::string tok = encrypt(ring, "a secret of some length");
    std::string unpadded = tok.substr(0, tok.find('='));
    for (std::size_t n = 0; n < unpadded.size(); ++n)
        EXPECT_THROW(decrypt(ring, unpadded.substr(0, n)), Error) << n;
    for (std::size_t i = 0; i < tok.size(); ++i)
        for (int bit = 0; bit < 8; ++bit) {
            std::string t = tok;
            t[i] = static_cast<char>(t[i] ^ (1 << bit));
            try {
                // A flip may land on equivalent whitespace/padding only at the end.
                EXPECT_EQ(decrypt(ring, t), "a secret of some length");
                EXPECT_GE(i, tok.size() - 2);
            } catch (const Error&) {
            }
        }
}

TEST(Tokens, StructureIsCheckedBeforeSlicing) {
    Keyring ring = Keyring::parse(kKey1);
    std::vector<std::uint8_t> raw(25 + 32 + 32, 0);
    raw[0] = 0x80;
    auto enc = [](const std::vector<std::uint8_t>& r) {
        std::string s(base64::encoded_length(r.size()), '\0');
        base64::encode_urlsafe(r.data(), r.size(), s.data());
        return s;
    };
    EXPECT_EQ(kind_of([&] { decrypt(ring, enc(raw)); }), ErrorKind::InvalidToken);
    raw[0] = 0x81;
    EXPECT_EQ(kind_of([&] { decrypt(ring, enc(raw)); }), ErrorKind::MalformedToken);
    raw[0] = 0x80;
    raw.resize(25 + 32 + 31);  // ciphertext of 31 bytes
    EXPECT_EQ(kind_of([&] { decrypt(ring, enc(raw)); }), ErrorKind::MalformedToken);
    raw.resize(25 + 32);  // no ciphertext at all
    EXPECT_EQ(kind_of([&] { decrypt(ring, enc(raw)); }), ErrorKind::MalformedToken);
    EXPECT_FALSE(looks_like_token(enc(raw)));
    EXPECT_TRUE(looks_like_token(encrypt(ring, "")));
    EXPECT_FALSE(looks_like_token("plain password"));
}

TEST(Ttl, BoundariesMatchCryptography) {
    Keyring ring = Keyring::parse(kKey1);
    const std::int64_t ts = 1'000'000;
    std::string tok = encrypt(ring, "t", ts);
    EXPECT_EQ(decrypt(ring, tok, 10, ts + 10), "t");                      // ts + ttl == now: valid
    EXPECT_EQ(kind_of([&] { decrypt(ring, tok, 10, ts + 11); }), ErrorKind::Expired);
    EXPECT_EQ(decrypt(ring, tok, 10, ts - 60), "t");                      // exactly the allowed skew
    EXPECT_EQ(kind_of([&] { decrypt(ring, tok, 10, ts - 61); }), ErrorKind::FutureTimestamp);
    EXPECT_EQ(decrypt(ring, tok, std::nullopt, 0), "t");                  // no ttl: no time check
    EXPECT_EQ(decrypt(ring, tok, 0, ts), "t");
    EXPECT_EQ(kind_of([&] { decrypt(ring, tok, -1, ts); }), ErrorKind::Expired);
}

TEST(Ttl, TimeIsCheckedBeforeTheSignature) {
    Keyring ring = Keyring::parse(kKey1);
    std::string foreign = encrypt(Keyring::parse(kKey2), "t", 100);
    EXPECT_EQ(kind_of([&] { decrypt(ring, foreign, 1, 1000); }), ErrorKind::Expired);
    EXPECT_EQ(kind_of([&] { decrypt(ring, foreign, std::nullopt, 1000); }), ErrorKind::InvalidToken);
}

TEST(Ttl, ExtremeValuesDoNotOverflow) {
    Keyring ring = Keyring::parse(kKey1);
    const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    const std::int64_t imax = std::numeric_limits<std::int64_t>::max();
    const std::int64_t imin = std::numeric_limits<std::int64_t>::min();
    std::string at_max = encrypt(ring, "m", max), at_zero = encrypt(ring, "z", 0);
    EXPECT_EQ(ring.extract_timestamp(at_max), max);
    EXPECT_EQ(kind_of([&] { decrypt(ring, at_max, imax, imax); }), ErrorKind::FutureTimestamp);
    EXPECT_EQ(decrypt(ring, at_zero, imax, imax), "z");
    EXPECT_EQ(kind_of([&] { decrypt(ring, at_zero, imin, 0); }), ErrorKind::Expired);
    EXPECT_EQ(kind_of([&] { decrypt(ring, at_zero, 2147483647, imax); }), ErrorKind::Expired);
    EXPECT_EQ(kind_of([&] { decrypt(ring, at_max, 2147483647, imax); }), ErrorKind::FutureTimestamp);
}

TEST(Errors, NeverContainPlaintextOrKeys) {
    Keyring ring = Keyring::parse(kKey1);
    std::string tok = encrypt(ring, "TOPSECRET");
    for (auto f : std::vector<std::function<void()>>{
             [&] { decrypt(Keyring::parse(kKey2), tok); },
             [&] { decrypt(ring, tok, -5); },
             [&] { decrypt(ring, tok + "x"); },
             [&] { Keyring::parse(kKey1 + ",bad" + kKey2); }}) {
        std::string msg = error_of(f);
        EXPECT_FALSE(msg.empty());
        EXPECT_EQ(msg.find("TOPSECRET"), std::string::npos);
        EXPECT_EQ(msg.find(kKey1.substr(0, 10)), std::string::npos);
        EXPECT_EQ(msg.find(kKey2.substr(0, 10)), std::string::npos);
    }
}

TEST(RandomIv, ForkedChildNeverRepeatsTheParentsIvs) {
    std::uint8_t warm[16];
    random_iv(warm);  // the parent's pool is now filled
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::uint8_t iv[16];
        random_iv(iv);
        ssize_t w = write(fds[1], iv, sizeof iv);
        _exit(w == static_cast<ssize_t>(sizeof iv) ? 0 : 1);
    }
    std::uint8_t child[16], parent[16];
    ASSERT_EQ(read(fds[0], child, sizeof child), static_cast<ssize_t>(sizeof child));
    int status = 0;
    waitpid(pid, &status, 0);
    random_iv(parent);
    EXPECT_NE(std::memcmp(child, parent, 16), 0);
    close(fds[0]);
    close(fds[1]);
}

TEST(RandomIv, SuccessiveIvsDiffer) {
    std::set<std::string> seen;
    for (int i = 0; i < 2000; ++i) {
        std::uint8_t iv[16];
        random_iv(iv);
        seen.emplace(reinterpret_cast<char*>(iv), 16);
    }
    EXPECT_EQ(seen.size(), 2000u);
}

TEST(Keyring, KeysSharingASigningHalfBehaveLikeMultiFernet) {
    // Same signing half (bytes 0-15) as the spec key, different encryption half:
    // MultiFernet moves on to the next key when padding fails after the MAC.
    const std::string twin = "cw_0x689RpI-jtRR7oE8h_eQqKImvJapLeSbXpwF4e4=";
    Keyring ring = Keyring::parse(twin + "," + kKey1);
    const std::string spec_token =
        "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
    std::size_t idx = 99;
    EXPECT_EQ(decrypt(ring, spec_token, std::nullopt, unix_now(), &idx), "hello");
    EXPECT_EQ(idx, 1u);
    std::string out(Keyring::rotate_bound(spec_token.size()), '\0');
    out.resize(ring.rotate(spec_token, out.data()));
    EXPECT_EQ(decrypt(ring, out), "hello");
}

TEST(Keyring, KeyOrderHintNeverChangesTheAnswer) {
    // Distinct signing halves: the key that authenticated the last token is
    // tried first; answers must still be each token's one authenticating key,
    // whatever order tokens of different keys come in.
    const std::string k3 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    Keyring ring = Keyring::parse(kKey1 + "," + kKey2 + "," + k3);
    const Keyring only[3] = {Keyring::parse(kKey1), Keyring::parse(kKey2), Keyring::parse(k3)};
    const std::size_t order[] = {2, 2, 0, 1, 1, 2, 0, 0, 1, 2, 1, 0};
    for (std::size_t round = 0; round < 2; ++round) {
        for (std::size_t i = 0; i < sizeof order / sizeof order[0]; ++i) {
            std::size_t k = order[i];
            std::string pt = "value " + std::to_string(round) + "/" + std::to_string(i);
            std::string tok = encrypt(only[k], pt);   // a fresh token: the memo has never seen it
            std::size_t idx = 99;
            if (round == 0) {
                EXPECT_EQ(ring.key_index(tok), std::optional<std::size_t>(k)) << i;
                EXPECT_EQ(decrypt(ring, tok, std::nullopt, unix_now(), &idx), pt);
            } else {   // decrypt first, without key_index having seen the token
                EXPECT_EQ(decrypt(ring, tok, std::nullopt, unix_now(), &idx), pt);
                EXPECT_EQ(ring.key_index(tok), std::optional<std::size_t>(k)) << i;
            }
            EXPECT_EQ(idx, k) << i;
        }
    }
    // A token of no key is refused whatever the hint.
    const Keyring other = Keyring::parse(Keyring::generate_key());
    std::string foreign = encrypt(other, "x");
    EXPECT_EQ(ring.key_index(foreign), std::nullopt);
    EXPECT_EQ(kind_of([&] { decrypt(ring, foreign); }), ErrorKind::InvalidToken);
    EXPECT_EQ(ring.key_index(encrypt(only[1], "y")), std::optional<std::size_t>(1));
}

TEST(Keyring, SharedSigningHalvesKeepFirstMatchOrder) {
    // Two keys with one signing half: both authenticate the same tokens, so
    // key_index must stay "the first key whose MAC matches", however recently
    // the second one was used.
    const std::string twin = "cw_0x689RpI-jtRR7oE8h_eQqKImvJapLeSbXpwF4e4=";
    Keyring ring = Keyring::parse(twin + "," + kKey1);
    std::string under_second = encrypt(Keyring::parse(kKey1), "second");
    std::size_t idx = 99;
    EXPECT_EQ(decrypt(ring, under_second, std::nullopt, unix_now(), &idx), "second");
    EXPECT_EQ(idx, 1u);
    std::string another = encrypt(Keyring::parse(kKey1), "again");
    EXPECT_EQ(ring.key_index(another), std::optional<std::size_t>(0));
    EXPECT_EQ(decrypt(ring, another, std::nullopt, unix_now(), &idx), "again");
    EXPECT_EQ(idx, 1u);
}
