#include "base64.hpp"

#include <cstring>

namespace conn_crypto::base64 {
namespace {

constexpr char kUrlSafe[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Decoding tables built at compile time, one set per accepted alphabet: the
// table for position k of a 4-character group holds the character's sextet
// already shifted into place in the group's 24 bits, and kBad (above those
// bits) for characters outside the alphabet. A group is then four lookups,
// three ORs and a single validity test.
constexpr std::uint32_t kBad = 0xFF000000u;

struct DecodeTables {
    std::uint32_t at[4][256];
};

constexpr DecodeTables make_tables(bool accept_std) {
    DecodeTables d{};
    for (auto& table : d.at)
        for (auto& v : table) v = kBad;
    for (int k = 0; k < 4; ++k) {
        const int shift = 18 - 6 * k;
        for (int i = 0; i < 64; ++i)
            d.at[k][static_cast<unsigned char>(kUrlSafe[i])] = static_cast<std::uint32_t>(i) << shift;
        if (accept_std) {
            d.at[k][static_cast<unsigned char>('+')] = 62u << shift;
            d.at[k][static_cast<unsigned char>('/')] = 63u << shift;
        }
    }
    return d;
}
constexpr DecodeTables kTableUrl = make_tables(false);
constexpr DecodeTables kTableAny = make_tables(true);

// Encoding table: the two characters of every 12-bit value, so 3 bytes take
// two lookups instead of four.
struct PairTable {
    char at[4096][2];
};

constexpr PairTable make_pairs() {
    PairTable p{};
    for (int i = 0; i < 4096; ++i) {
        p.at[i][0] = kUrlSafe[i >> 6];
        p.at[i][1] = kUrlSafe[i & 63];
    }
    return p;
}
constexpr PairTable kPairs = make_pairs();

// Writes the 3 bytes of a decoded group, as one 4-byte store: the caller
// guarantees a spare byte after them (decoded_bound leaves 3).
inline void store_group(std::uint32_t v, std::uint8_t* out) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::uint32_t w = __builtin_bswap32(v << 8);
#else
    std::uint32_t w = v << 8;
#endif
    std::memcpy(out, &w, 4);
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

std::size_t encoded_length(std::size_t n) noexcept {
    std::size_t groups = n / 3 + (n % 3 != 0);
    if (groups > SIZE_MAX / 4) return 0;
    return groups * 4;
}

void encode_urlsafe(const std::uint8_t* in, std::size_t n, char* out) noexcept {
    std::size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
        std::memcpy(out, kPairs.at[v >> 12], 2);
        std::memcpy(out + 2, kPairs.at[v & 0xFFF], 2);
        out += 4;
    }
    std::size_t rest = n - i;
    if (rest == 1) {
        std::memcpy(out, kPairs.at[std::uint32_t{in[i]} << 4], 2);
        out[2] = '=';
        out[3] = '=';
    } else if (rest == 2) {
        std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
        std::memcpy(out, kPairs.at[v >> 12], 2);
        out[2] = kUrlSafe[(v >> 6) & 63];
        out[3] = '=';
    }
}

std::optional<std::size_t> decode(std::string_view text, Alphabet alphabet,
                                  std::uint8_t* out) noexcept {
    const auto& table = alphabet == Alphabet::UrlSafe ? kTableUrl : kTableAny;
    text = trim(text);

    // Padding: at most two '=' and only at the very end.
    std::size_t pad = 0;
    while (pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
    if (pad > 2) return std::nullopt;
    std::string_view body = text.substr(0, text.size() - pad);
    if (pad != 0 && (body.size() + pad) % 4 != 0) return std::nullopt;
    if (body.size() % 4 == 1) return std::nullopt;  // a lone character carries no byte

    const auto& t = table.at;
    const auto* p = reinterpret_cast<const unsigned char*>(body.data());
    std::uint8_t* start = out;
    const std::size_t groups = body.size() / 4;
    for (std::size_t g = 0; g < groups; ++g, p += 4) {
        std::uint32_t v = t[0][p[0]] | t[1][p[1]] | t[2][p[2]] | t[3][p[3]];
        if (v & kBad) return std::nullopt;
        store_group(v, out);
        out += 3;
    }
    std::size_t rest = body.size() % 4;
    if (rest != 0) {
        std::uint32_t v = t[0][p[0]] | t[1][p[1]] | (rest == 3 ? t[2][p[2]] : 0);
        if (v & kBad) return std::nullopt;
        // Unused low bits must be zero, so every byte string has one encoding.
        if (rest == 2) {
            if (v & 0xFFFF) return std::nullopt;
            *out++ = static_cast<std::uint8_t>(v >> 16);
        } else {  // rest == 3
            if (v & 0xFF) return std::nullopt;
            *out++ = static_cast<std::uint8_t>(v >> 16);
            *out++ = static_cast<std::uint8_t>(v >> 8);
        }
    }
    return static_cast<std::size_t>(out - start);
}

}  // namespace conn_crypto::base64
