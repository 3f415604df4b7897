#include "base64.hpp"

#include <array>

namespace conn_crypto::base64 {
namespace {

constexpr char kUrlSafe[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::uint8_t kInvalid = 0xFF;

// Decoding tables built at compile time: one for each accepted alphabet.
constexpr std::array<std::uint8_t, 256> make_table(bool accept_std) {
    std::array<std::uint8_t, 256> t{};
    for (auto& v : t) v = kInvalid;
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kUrlSafe[i])] = static_cast<std::uint8_t>(i);
    if (accept_std) {
        t['+'] = 62;
        t['/'] = 63;
    }
    return t;
}
constexpr auto kTableUrl = make_table(false);
constexpr auto kTableAny = make_table(true);

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
        *out++ = kUrlSafe[(v >> 18) & 63];
        *out++ = kUrlSafe[(v >> 12) & 63];
        *out++ = kUrlSafe[(v >> 6) & 63];
        *out++ = kUrlSafe[v & 63];
    }
    std::size_t rest = n - i;
    if (rest == 1) {
        std::uint32_t v = std::uint32_t{in[i]} << 16;
        *out++ = kUrlSafe[(v >> 18) & 63];
        *out++ = kUrlSafe[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (rest == 2) {
        std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
        *out++ = kUrlSafe[(v >> 18) & 63];
        *out++ = kUrlSafe[(v >> 12) & 63];
        *out++ = kUrlSafe[(v >> 6) & 63];
        *out++ = '=';
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

    std::uint8_t* start = out;
    std::size_t i = 0;
    const std::size_t full = body.size() / 4 * 4;
    for (; i < full; i += 4) {
        std::uint8_t a = table[static_cast<unsigned char>(body[i])];
        std::uint8_t b = table[static_cast<unsigned char>(body[i + 1])];
        std::uint8_t c = table[static_cast<unsigned char>(body[i + 2])];
        std::uint8_t d = table[static_cast<unsigned char>(body[i + 3])];
        if ((a | b | c | d) == kInvalid || ((a | b | c | d) & 0xC0)) return std::nullopt;
        std::uint32_t v = (std::uint32_t{a} << 18) | (std::uint32_t{b} << 12) | (std::uint32_t{c} << 6) | d;
        *out++ = static_cast<std::uint8_t>(v >> 16);
        *out++ = static_cast<std::uint8_t>(v >> 8);
        *out++ = static_cast<std::uint8_t>(v);
    }
    std::size_t rest = body.size() - full;
    if (rest != 0) {
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < rest; ++k) {
            std::uint8_t x = table[static_cast<unsigned char>(body[full + k])];
            if (x & 0xC0) return std::nullopt;
            v |= std::uint32_t{x} << (18 - 6 * k);
        }
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
