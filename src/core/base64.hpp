// Base64 as Fernet uses it: tokens and keys are url-safe base64 with '='
// padding. Decoding is strict about the alphabet and trailing data, lenient
// about surrounding whitespace and missing padding.
#pragma once
#include "no_postgres.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace conn_crypto::base64 {

enum class Alphabet {
    UrlSafe,        // '-' and '_' only (tokens)
    UrlSafeOrStd,   // also '+' and '/' (keys may be written either way)
};

// Length of the padded url-safe encoding of n bytes; 0 if it would overflow.
std::size_t encoded_length(std::size_t n) noexcept;

// Upper bound of the decoded length of n characters.
inline std::size_t decoded_bound(std::size_t n) noexcept { return n / 4 * 3 + 3; }

// Writes encoded_length(n) characters (no terminator) to out.
void encode_urlsafe(const std::uint8_t* in, std::size_t n, char* out) noexcept;

// Decodes text into out (capacity decoded_bound(text.size()); bytes past the
// decoded length may be overwritten). Returns the decoded length, or nullopt
// when the text is not canonical-enough base64: characters outside the
// alphabet, data after padding, a lone trailing character, or padding in the
// wrong place. Whitespace around the text is ignored; padding may be absent.
std::optional<std::size_t> decode(std::string_view text, Alphabet alphabet,
                                  std::uint8_t* out) noexcept;

// Trims ASCII whitespace from both ends.
std::string_view trim(std::string_view s) noexcept;

}  // namespace conn_crypto::base64
