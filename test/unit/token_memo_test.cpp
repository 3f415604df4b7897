// The keyring's memo of recently authenticated tokens: a hit needs the exact
// bytes, and the keyring answers the same with or without it.
#include "errors.hpp"
#include "keyring.hpp"
#include "token_memo.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace conn_crypto;

namespace {

const std::string kNew = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const std::string kOld = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

std::string encrypt(const Keyring& ring, const std::string& pt, std::uint64_t ts = 1700000000) {
    std::string out(token_length(pt.size()), '\0');
    ring.encrypt(reinterpret_cast<const std::uint8_t*>(pt.data()), pt.size(), out.data(), ts);
    return out;
}

std::string decrypt(const Keyring& ring, const std::string& tok, std::size_t* key = nullptr) {
    std::vector<std::uint8_t> out(plaintext_bound(tok.size()) + 1);
    Decrypted d = ring.decrypt(tok, out.data());
    if (key) *key = d.key_index;
    return std::string(out.begin(), out.begin() + static_cast<long>(d.length));
}

std::string rotate(const Keyring& ring, const std::string& tok) {
    std::string out(Keyring::rotate_bound(tok.size()), '\0');
    out.resize(ring.rotate(tok, out.data()));
    return out;
}

// Each single-character change of a token: in the MAC, the ciphertext, the IV, the timestamp.
std::vector<std::string> tampered(const std::string& tok) {
    std::vector<std::string> out;
    for (std::size_t pos : {tok.size() - 3, tok.size() / 2, std::size_t{15}, std::size_t{5}}) {
        std::string t = tok;
        t[pos] = t[pos] == 'A' ? 'B' : 'A';
        out.push_back(t);
    }
    return out;
}

}  // namespace

TEST(TokenMemo, HitsOnlyTheExactBytes) {
    TokenMemo memo;
    std::string tok = encrypt(Keyring::parse(kNew), "secret");
    EXPECT_EQ(memo.find(tok), std::nullopt);
    memo.remember(tok, 3);
    EXPECT_EQ(memo.find(tok), std::optional<std::size_t>(3));
    for (const std::string& t : tampered(tok)) EXPECT_EQ(memo.find(t), std::nullopt) << t;
    EXPECT_EQ(memo.find(tok.substr(0, tok.size() - 1)), std::nullopt);
    EXPECT_EQ(memo.find(""), std::nullopt);
    memo.forget();
    EXPECT_EQ(memo.find(tok), std::nullopt);
}

TEST(TokenMemo, SkipsOversizedTokensAndKeepsTheNewestPerSlot) {
    TokenMemo memo;
    std::string big(TokenMemo::kMaxToken + 1, 'g');
    memo.remember(big, 0);
    EXPECT_EQ(memo.find(big), std::nullopt);
    // More tokens than slots: the newest are found, none with a wrong key.
    Keyring ring = Keyring::parse(kNew);
    std::vector<std::string> toks;
    for (int i = 0; i < 3 * static_cast<int>(TokenMemo::kSlots); ++i) {
        toks.push_back(encrypt(ring, "v" + std::to_string(i)));
        memo.remember(toks.back(), static_cast<std::size_t>(i));
    }
    EXPECT_EQ(memo.find(toks.back()), std::optional<std::size_t>(toks.size() - 1));
    for (std::size_t i = 0; i < toks.size(); ++i) {
        auto k = memo.find(toks[i]);
        if (k) EXPECT_EQ(*k, i);
    }
}

// A token the keyring has just authenticated, changed in one character, is
// still refused: the memo never vouches for bytes it has not seen.
TEST(KeyringMemo, TamperedCopiesOfAKnownTokenStayInvalid) {
    Keyring ring = Keyring::parse(kNew + "," + kOld);
    std::string tok = encrypt(Keyring::parse(kOld), "p@ssw0rd");
    EXPECT_EQ(ring.key_index(tok), std::optional<std::size_t>(1));
    EXPECT_EQ(decrypt(ring, tok), "p@ssw0rd");
    for (const std::string& t : tampered(tok)) {
        EXPECT_EQ(ring.key_index(t), std::nullopt) << t;
        std::vector<std::uint8_t> out(plaintext_bound(t.size()) + 1);
        EXPECT_THROW(ring.decrypt(t, out.data()), Error) << t;
        std::string r(Keyring::rotate_bound(t.size()), '\0');
        EXPECT_THROW(ring.rotate(t, r.data()), Error) << t;
    }
    // A token this keyring produced is not known to another keyring.
    std::string fresh = rotate(ring, tok);
    EXPECT_EQ(ring.key_index(fresh), std::optional<std::size_t>(0));
    EXPECT_EQ(Keyring::parse(kOld).key_index(fresh), std::nullopt);
}

// Repeated calls (memo hits) answer exactly as the first ones (misses), for
// every key position and for keys sharing a signing half.
TEST(KeyringMemo, RepeatedCallsAnswerAsTheFirst) {
    const std::string twin = "cw_0x689RpI-jtRR7oE8h_eQqKImvJapLeSbXpwF4e4=";
    Keyring ring = Keyring::parse(twin + "," + kNew + "," + kOld);
    std::vector<std::string> toks = {encrypt(Keyring::parse(kNew), "a"), encrypt(Keyring::parse(kOld), "bb"),
                                     encrypt(Keyring::parse(twin), "ccc")};
    const std::vector<std::size_t> first_mac = {0, 2, 0};   // twin shares kNew's signing half
    const std::vector<std::size_t> decrypting = {1, 2, 0};
    const std::vector<std::string> plain = {"a", "bb", "ccc"};
    for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < toks.size(); ++i) {
            EXPECT_EQ(ring.key_index(toks[i]), std::optional<std::size_t>(first_mac[i])) << round << " " << i;
            std::size_t key = 99;
            EXPECT_EQ(decrypt(ring, toks[i], &key), plain[i]) << round << " " << i;
            EXPECT_EQ(key, decrypting[i]) << round << " " << i;
            EXPECT_EQ(ring.extract_timestamp(toks[i]), 1700000000u);
            std::string r = rotate(ring, toks[i]);
            EXPECT_EQ(decrypt(Keyring::parse(twin), r), plain[i]);
            EXPECT_EQ(ring.extract_timestamp(r), 1700000000u);
        }
    }
}
