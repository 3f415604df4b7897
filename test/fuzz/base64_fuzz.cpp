// Fuzzes base64::decode for both alphabets against a reference decoder
// written differently (bit accumulator instead of 4-character groups), and
// checks that every accepted text is the canonical encoding of its bytes up
// to surrounding whitespace, optional padding and (for keys) the alphabet.
#include "base64.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using namespace conn_crypto;

namespace {

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "base64_fuzz: invariant broken at line %d: %s\n", \
                         __LINE__, #cond);                                            \
            std::abort();                                                             \
        }                                                                             \
    } while (0)

constexpr std::size_t kGuard = 16;
constexpr std::uint8_t kFill = 0xA5;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

int sextet(char c, bool accept_std) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || (accept_std && c == '+')) return 62;
    if (c == '_' || (accept_std && c == '/')) return 63;
    return -1;
}

// The documented rules, implemented independently of the core.
std::optional<std::vector<std::uint8_t>> reference_decode(std::string_view s, bool accept_std) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    std::size_t pad = 0;
    while (!s.empty() && s.back() == '=') {
        s.remove_suffix(1);
        ++pad;
    }
    if (pad > 2 || (pad && (s.size() + pad) % 4) || s.size() % 4 == 1) return std::nullopt;
    std::vector<std::uint8_t> out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : s) {
        int v = sextet(c, accept_std);
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>(acc >> bits));
        }
        acc &= (1u << bits) - 1;
    }
    if (acc != 0) return std::nullopt;  // unused low bits must be zero
    return out;
}

std::string encode(const std::uint8_t* p, std::size_t n) {
    std::string s(base64::encoded_length(n), '\0');
    base64::encode_urlsafe(p, n, s.data());
    return s;
}

void check_alphabet(std::string_view text, base64::Alphabet alphabet) {
    const bool accept_std = alphabet == base64::Alphabet::UrlSafeOrStd;
    const std::size_t cap = base64::decoded_bound(text.size());
    std::vector<std::uint8_t> out(cap + kGuard, kFill);
    auto n = base64::decode(text, alphabet, out.data());
    for (std::size_t i = cap; i < out.size(); ++i) CHECK(out[i] == kFill);

    auto ref = reference_decode(text, accept_std);
    CHECK(n.has_value() == ref.has_value());
    if (!n) return;
    CHECK(*n <= cap && *n == ref->size());
    CHECK(*n == 0 || std::memcmp(out.data(), ref->data(), *n) == 0);

    // Re-encoding (url-safe) and decoding again gives the same bytes.
    const std::string enc = encode(out.data(), *n);
    CHECK(enc.size() % 4 == 0);
    std::vector<std::uint8_t> again(base64::decoded_bound(enc.size()));
    auto n2 = base64::decode(enc, base64::Alphabet::UrlSafe, again.data());
    CHECK(n2 && *n2 == *n && std::memcmp(again.data(), out.data(), *n) == 0);

    // encode(decode(x)) is x trimmed, re-padded and mapped to url-safe.
    std::string norm(base64::trim(text));
    while (!norm.empty() && norm.back() == '=') norm.pop_back();
    if (accept_std)
        for (char& c : norm) c = c == '+' ? '-' : c == '/' ? '_' : c;
    while (norm.size() % 4) norm += '=';
    CHECK(enc == norm);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    check_alphabet(text, base64::Alphabet::UrlSafe);
    check_alphabet(text, base64::Alphabet::UrlSafeOrStd);

    // The encoder on arbitrary bytes: length formula and a clean round trip.
    const std::string enc = encode(data, size);
    CHECK(enc.size() == (size + 2) / 3 * 4);
    std::vector<std::uint8_t> back(base64::decoded_bound(enc.size()));
    auto n = base64::decode(enc, base64::Alphabet::UrlSafe, back.data());
    CHECK(n && *n == size && (size == 0 || std::memcmp(back.data(), data, size) == 0));
    return 0;
}
