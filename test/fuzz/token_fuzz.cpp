// Fuzzes every Keyring entry point that takes a token: decrypt (with and
// without ttl), key_index, extract_timestamp, rotate, plus parse_token and
// looks_like_token. They may only ever throw conn_crypto::Error (anything else
// escapes and crashes the fuzzer), and their answers must agree.
//
// Input: the token text. If the input ends in '\0' + ttl (i64, big-endian) +
// now (i64, big-endian), the part before the '\0' is also decrypted with that
// ttl, so the fuzzer steers the time arithmetic. A random token never carries
// a valid MAC, so every structurally valid input is also re-signed with one of
// the ring's keys to reach the decryption and padding code behind the MAC.
#include "base64.hpp"
#include "errors.hpp"
#include "fernet.hpp"
#include "keyring.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "token_fuzz: invariant broken at line %d: %s\n", \
                         __LINE__, #cond);                                           \
            std::abort();                                                            \
        }                                                                            \
    } while (0)

// The spec key sits at index 1, so spec tokens authenticate with a
// non-primary key and rotate() really moves them to another key.
constexpr const char* kKeys[] = {
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=",
    "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=",
};
constexpr std::size_t kNumKeys = sizeof kKeys / sizeof kKeys[0];

struct Fixture {
    Keyring ring;
    std::vector<SecureBytes> raw;  // raw key bytes, to re-sign tokens
};

const Fixture& fixture() {
    static const Fixture f = [] {
        std::string text;
        std::vector<SecureBytes> raw;
        for (const char* k : kKeys) {
            text += (text.empty() ? "" : ",");
            text += k;
            raw.push_back(*Keyring::decode_key(k));
        }
        return Fixture{Keyring::parse(text), std::move(raw)};
    }();
    return f;
}

// Output buffers of exactly the documented capacity followed by a guard
// pattern: OpenSSL is not instrumented, so ASan alone would miss its overruns.
constexpr std::size_t kGuard = 64;
constexpr std::uint8_t kFill = 0xA5;

struct Guarded {
    std::vector<std::uint8_t> buf;
    std::size_t cap;
    explicit Guarded(std::size_t capacity) : buf(capacity + kGuard, kFill), cap(capacity) {}
    std::uint8_t* data() { return buf.data(); }
    char* chars() { return reinterpret_cast<char*>(buf.data()); }
    void check_guard() const {
        for (std::size_t i = cap; i < buf.size(); ++i) CHECK(buf[i] == kFill);
    }
};

template <class F>
std::optional<ErrorKind> error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        CHECK(e.kind() != ErrorKind::Crypto);  // OpenSSL never fails on well-sized input
        return e.kind();
    }
    return std::nullopt;
}

std::uint64_t load_be64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

// signed_by: the key index the harness itself signed the token with.
void exercise(std::string_view token, std::optional<std::int64_t> ttl, std::int64_t now,
              std::optional<std::size_t> signed_by) {
    const Keyring& ring = fixture().ring;

    std::optional<std::uint64_t> parsed_ts;
    auto parse_err = error_of([&] { parsed_ts = parse_token(token).timestamp; });
    const bool structured = !parse_err;
    if (parse_err) CHECK(*parse_err == ErrorKind::MalformedToken);
    CHECK(looks_like_token(token) == structured);

    // key_index is documented never to throw on bad tokens.
    std::optional<std::size_t> idx;
    try {
        idx = ring.key_index(token);
    } catch (...) {
        CHECK(!"key_index threw");
    }
    if (!structured) CHECK(!idx);
    // A MAC that verifies under two different keys would be a forgery.
    if (signed_by) CHECK(idx == signed_by);

    const std::size_t cap = plaintext_bound(token.size());
    Guarded plain(cap);
    Decrypted d;
    auto dec_err = error_of([&] { d = ring.decrypt(token, plain.data()); });
    plain.check_guard();
    if (!dec_err) {
        CHECK(idx && *idx == d.key_index);
        CHECK(d.timestamp == *parsed_ts);
        CHECK(d.length <= cap);
    } else {
        CHECK(*dec_err == (structured ? ErrorKind::InvalidToken : ErrorKind::MalformedToken));
    }
    // With a matching key, decryption only fails on bad padding.
    if (signed_by && dec_err) CHECK(*dec_err == ErrorKind::InvalidToken);

    std::uint64_t ts = 0;
    auto ts_err = error_of([&] { ts = ring.extract_timestamp(token); });
    CHECK(!ts_err == idx.has_value());
    if (!ts_err) CHECK(ts == *parsed_ts);
    else CHECK(*ts_err == (structured ? ErrorKind::InvalidToken : ErrorKind::MalformedToken));

    const std::size_t rot_cap = Keyring::rotate_bound(token.size());
    Guarded rotated(rot_cap);
    std::size_t rot_len = 0;
    auto rot_err = error_of([&] { rot_len = ring.rotate(token, rotated.chars()); });
    rotated.check_guard();
    if (!dec_err) {
        // Invariant: whatever decrypts also rotates, to the primary key, with
        // the same plaintext and the original timestamp.
        CHECK(!rot_err);
        CHECK(rot_len == token_length(d.length) && rot_len <= rot_cap);
        std::string_view rtok(rotated.chars(), rot_len);
        Guarded plain2(plaintext_bound(rot_len));
        Decrypted d2;
        CHECK(!error_of([&] { d2 = ring.decrypt(rtok, plain2.data()); }));
        plain2.check_guard();
        CHECK(d2.key_index == 0);
        CHECK(d2.timestamp == d.timestamp);
        CHECK(d2.length == d.length && std::memcmp(plain2.data(), plain.data(), d.length) == 0);
        CHECK(ring.key_index(rtok) == std::optional<std::size_t>(0));
        CHECK(ring.extract_timestamp(rtok) == d.timestamp);
    } else {
        CHECK(rot_err == dec_err);
    }

    if (!ttl) return;
    Guarded plain3(cap);
    Decrypted d3;
    auto ttl_err = error_of([&] { d3 = ring.decrypt(token, plain3.data(), ttl, now); });
    plain3.check_guard();
    if (!structured) {
        CHECK(ttl_err == std::optional<ErrorKind>(ErrorKind::MalformedToken));
        return;
    }
    // As cryptography: time is checked before the MAC, expiry before skew.
    const __int128 t = *parsed_ts;
    std::optional<ErrorKind> want = dec_err;
    if (t + *ttl < now) want = ErrorKind::Expired;
    else if (static_cast<__int128>(now) + token_layout::kMaxClockSkew < t) want = ErrorKind::FutureTimestamp;
    CHECK(ttl_err == want);
    if (!ttl_err) {
        CHECK(d3.key_index == d.key_index && d3.timestamp == d.timestamp && d3.length == d.length);
        CHECK(std::memcmp(plain3.data(), plain.data(), d.length) == 0);
    }
}

// Replaces the MAC of a structurally valid token with a correct one under the
// key chosen by the timestamp's low byte, so the fuzzer controls the key too.
void exercise_resigned(std::string_view token, std::optional<std::int64_t> ttl, std::int64_t now) {
    ParsedToken p;
    if (error_of([&] { p = parse_token(token); })) return;
    const std::size_t k = p.raw[8] % kNumKeys;
    unsigned int mac_len = 0;
    std::uint8_t* mac = p.raw.data() + p.raw.size() - token_layout::kMac;
    CHECK(HMAC(EVP_sha256(), fixture().raw[k].data(), 16, p.raw.data(), p.signed_len(), mac, &mac_len) != nullptr);
    CHECK(mac_len == token_layout::kMac);
    std::string signed_token(base64::encoded_length(p.raw.size()), '\0');
    base64::encode_urlsafe(p.raw.data(), p.raw.size(), signed_token.data());
    exercise(signed_token, ttl, now, k);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    exercise(input, std::nullopt, 0, std::nullopt);

    std::string_view token = input;
    std::optional<std::int64_t> ttl;
    std::int64_t now = 0;
    if (size >= 17 && data[size - 17] == '\0') {
        token = input.substr(0, size - 17);
        ttl = static_cast<std::int64_t>(load_be64(data + size - 16));
        now = static_cast<std::int64_t>(load_be64(data + size - 8));
        exercise(token, ttl, now, std::nullopt);
    }
    exercise_resigned(token, ttl, now);
    return 0;
}
