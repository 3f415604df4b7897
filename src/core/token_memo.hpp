#pragma once
#include "no_postgres.hpp"

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace conn_crypto {

// Which key authenticated the last few tokens a keyring checked or produced.
// One SQL row often hands the same token to several calls (a bulk rewrite's
// WHERE test, the new value's expression, then the protect trigger on the
// token just made); with the memo only the first call pays for the HMAC.
// A hit needs the exact same bytes, so it says no more than the HMAC did.
// Tokens are ciphertext, nothing secret is kept. Not thread-safe: one per
// keyring, and a keyring belongs to one backend.
class TokenMemo {
public:
    static constexpr std::size_t kSlots = 64;
    static constexpr std::size_t kMaxToken = 4096;   // longer tokens are not remembered

    std::optional<std::size_t> find(std::string_view token) const noexcept;
    void remember(std::string_view token, std::size_t key_index) noexcept;
    void forget() noexcept;

private:
    struct Slot {
        std::string token;
        std::size_t key = 0;
        bool used = false;
    };
    static std::size_t slot_of(std::string_view token) noexcept;

    std::array<Slot, kSlots> slots_;
};

}  // namespace conn_crypto
