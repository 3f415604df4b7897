#include "token_memo.hpp"

#include <cstdint>
#include <cstring>
#include <new>

namespace conn_crypto {

// A token ends with the base64 of its HMAC: its last bytes spread tokens over
// the slots. A crafted token can only collide into a miss, never a false hit.
std::size_t TokenMemo::slot_of(std::string_view token) noexcept {
    std::uint64_t tail = 0;
    std::size_t n = token.size() < sizeof tail ? token.size() : sizeof tail;
    std::memcpy(&tail, token.data() + token.size() - n, n);
    tail ^= token.size();
    tail *= 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(tail >> 58) % kSlots;
}

std::optional<std::size_t> TokenMemo::find(std::string_view token) const noexcept {
    if (token.empty() || token.size() > kMaxToken) return std::nullopt;
    const Slot& s = slots_[slot_of(token)];
    if (s.used && s.token == token) return s.key;
    return std::nullopt;
}

void TokenMemo::remember(std::string_view token, std::size_t key_index) noexcept {
    if (token.empty() || token.size() > kMaxToken) return;
    Slot& s = slots_[slot_of(token)];
    try {
        s.token.assign(token.data(), token.size());
        s.key = key_index;
        s.used = true;
    } catch (const std::bad_alloc&) {
        s.used = false;   // the memo only saves work: out of memory, remember nothing
    }
}

void TokenMemo::forget() noexcept {
    for (Slot& s : slots_) s.used = false;
}

}  // namespace conn_crypto
