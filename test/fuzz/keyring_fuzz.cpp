// Fuzzes Keyring::parse with arbitrary keyring text. A rejected keyring must
// fail with BadKey/NoKey and a message that carries none of the input (key
// material must never reach a log); an accepted one must hold exactly the
// listed keys, decoded as an independent decoder decodes them, and round-trip.
#include "base64.hpp"
#include "errors.hpp"
#include "fernet.hpp"
#include "keyring.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
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

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "keyring_fuzz: invariant broken at line %d: %s\n", \
                         __LINE__, #cond);                                             \
            std::abort();                                                              \
        }                                                                              \
    } while (0)

constexpr std::size_t kWindow = 8;

std::optional<std::string> parse_error(std::string_view text) {
    try {
        Keyring::parse(text);
    } catch (const Error& e) {
        return std::string(e.what());
    }
    return std::nullopt;
}

// Fails when an 8-character piece of the input shows up in the message. The
// input may itself contain fixed message text ("base64-encoded"), so a hit
// counts only if blanking that piece out of the input makes it disappear from
// the message: then it came from the input, not from the template.
void check_no_input_in_message(std::string_view text, const std::string& msg) {
    for (std::size_t i = 0; i + kWindow <= text.size(); ++i) {
        std::string_view w = text.substr(i, kWindow);
        if (msg.find(w) == std::string::npos) continue;
        char blank = '#';
        for (char c : {'#', '%', '*', '!'})
            if (w.find(c) == std::string_view::npos) { blank = c; break; }
        std::string blanked(text);
        for (std::size_t p = text.find(w); p != std::string_view::npos; p = text.find(w, p + 1))
            for (std::size_t k = p; k < p + kWindow; ++k)
                if (blanked[k] != ',') blanked[k] = blank;  // keep the key count and positions
        auto msg2 = parse_error(blanked);
        if (!msg2 || msg2->find(w) == std::string::npos) {
            std::fprintf(stderr, "keyring_fuzz: error message leaks input text \"%.*s\": %s\n",
                         static_cast<int>(w.size()), w.data(), msg.c_str());
            std::abort();
        }
    }
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Independent key decoder on OpenSSL's EVP_DecodeBlock: trim, map the
// url-safe alphabet to the standard one, re-add the padding.
std::optional<std::vector<std::uint8_t>> reference_key(std::string_view item) {
    while (!item.empty() && is_space(item.front())) item.remove_prefix(1);
    while (!item.empty() && is_space(item.back())) item.remove_suffix(1);
    std::string s(item);
    for (char& c : s) c = c == '-' ? '+' : c == '_' ? '/' : c;
    if (s.size() == kKeyChars - 1) s += '=';
    if (s.size() != kKeyChars || s.back() != '=') return std::nullopt;
    std::vector<std::uint8_t> out(33);
    if (EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size())) != 33)
        return std::nullopt;
    out.resize(kKeyBytes);
    return out;
}

std::vector<std::string_view> split(std::string_view text) {
    std::vector<std::string_view> items;
    for (std::size_t comma; (comma = text.find(',')) != std::string_view::npos; text.remove_prefix(comma + 1))
        items.push_back(text.substr(0, comma));
    items.push_back(text);
    return items;
}

std::string encrypt(const Keyring& ring, const std::uint8_t* pt, std::size_t n, std::uint64_t ts,
                    const std::uint8_t* iv) {
    std::string tok(token_length(n), '\0');
    ring.encrypt(pt, n, tok.data(), ts, iv);
    return tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::optional<Keyring> ring;
    try {
        ring.emplace(Keyring::parse(text));
    } catch (const Error& e) {
        CHECK(e.kind() == ErrorKind::BadKey || e.kind() == ErrorKind::NoKey);
        CHECK((e.kind() == ErrorKind::NoKey) == base64::trim(text).empty());
        check_no_input_in_message(text, e.what());
        return 0;
    }

    const auto items = split(text);
    CHECK(ring->size() == items.size() && items.size() <= kMaxKeys);
    std::vector<std::vector<std::uint8_t>> keys;
    for (std::string_view item : items) {
        auto mine = Keyring::decode_key(item);
        CHECK(mine && mine->size() == kKeyBytes);
        // The strict decoder may reject what EVP_DecodeBlock accepts (non-zero
        // unused bits), never the other way round, and never decode differently.
        auto ref = reference_key(item);
        CHECK(ref && std::equal(ref->begin(), ref->end(), mine->begin()));
        keys.push_back(std::move(*ref));
    }

    // Round trip under the primary key, with plaintext, timestamp and IV
    // taken from the input.
    std::uint8_t iv[16] = {};
    if (size) std::memcpy(iv, data, std::min<std::size_t>(size, sizeof iv));
    std::uint64_t ts = 0;
    for (std::size_t i = 0; i < std::min<std::size_t>(size, 8); ++i) ts = (ts << 8) | data[size - 1 - i];
    const std::string tok = encrypt(*ring, data, size, ts, iv);
    std::vector<std::uint8_t> plain(plaintext_bound(tok.size()));
    Decrypted d = ring->decrypt(tok, plain.data());
    CHECK(d.key_index == 0 && d.timestamp == ts);
    CHECK(d.length == size && (size == 0 || std::memcmp(plain.data(), data, size) == 0));

    // The token is signed with the primary key as the reference decoder reads it.
    std::vector<std::uint8_t> raw(base64::decoded_bound(tok.size()));
    auto raw_len = base64::decode(tok, base64::Alphabet::UrlSafe, raw.data());
    CHECK(raw_len && *raw_len > token_layout::kMinRaw - 1);
    std::uint8_t mac[32];
    unsigned int mac_len = 0;
    CHECK(HMAC(EVP_sha256(), keys[0].data(), 16, raw.data(), *raw_len - 32, mac, &mac_len) && mac_len == 32);
    CHECK(std::memcmp(mac, raw.data() + *raw_len - 32, 32) == 0);

    // A token from the last key alone authenticates with the first position
    // holding the same signing half (only that half takes part in the MAC).
    // Like MultiFernet, decryption then tries every key whose MAC matches,
    // in order, until one decrypts with valid padding: at worst the last key.
    auto same_signing = [&](const std::vector<std::uint8_t>& k) {
        return std::memcmp(k.data(), keys.back().data(), 16) == 0;
    };
    const std::size_t want =
        static_cast<std::size_t>(std::find_if(keys.begin(), keys.end(), same_signing) - keys.begin());
    const std::string old_tok = encrypt(Keyring::parse(items.back()), iv, sizeof iv, ts, iv);
    CHECK(ring->key_index(old_tok) == std::optional<std::size_t>(want));
    std::vector<std::uint8_t> old_plain(plaintext_bound(old_tok.size()));
    try {
        d = ring->decrypt(old_tok, old_plain.data());
        CHECK(d.key_index >= want && same_signing(keys[d.key_index]));
        if (keys[d.key_index] == keys.back())
            CHECK(d.length == sizeof iv && std::memcmp(old_plain.data(), iv, sizeof iv) == 0);
    } catch (const Error&) {
        CHECK(false);  // the last key itself always decrypts its own token
    }
    return 0;
}
