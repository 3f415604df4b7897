// Cost of one Fernet token through the Keyring, against the bare OpenSSL work
// every token needs: AES-128-CBC of the padded 32-byte password (48 bytes)
// and HMAC-SHA256 over version|timestamp|IV|ciphertext (73 bytes). The raw
// baseline is prepared as well as OpenSSL allows (key schedules and the keyed
// HMAC state set up once, only the IV re-set per operation), so the ratio
// measures what the core adds: base64, buffers, parsing, key search.
// bench/core_bench.sh runs this and prints the ratios.
#include "errors.hpp"
#include "fernet.hpp"
#include "keyring.hpp"

#include <benchmark/benchmark.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace conn_crypto;

namespace {

const std::string kKey = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const std::uint8_t kPassword[32] = {'c', 'o', 'r', 'r', 'e', 'c', 't', ' ', 'h', 'o', 'r', 's', 'e', ' ', 'b', 'a',
                                    't', 't', 'e', 'r', 'y', ' ', 's', 't', 'a', 'p', 'l', 'e', '-', '3', '2', 'b'};
const std::uint8_t kIv[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
constexpr std::uint64_t kTimestamp = 499162800;

void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "core_bench: %s\n", what);
        std::abort();
    }
}

std::string make_token(const Keyring& ring) {
    std::string tok(token_length(sizeof kPassword), '\0');
    ring.encrypt(kPassword, sizeof kPassword, tok.data(), kTimestamp, kIv);
    return tok;
}

// Distinct tokens of the password (random IVs): the keyring remembers the
// last few tokens it authenticated, so decrypting one token over and over
// would measure its memo, not the work of a token it has not seen.
constexpr std::size_t kPool = 1024;

std::vector<std::string> make_tokens(const Keyring& ring) {
    std::vector<std::string> toks;
    for (std::size_t i = 0; i < kPool; ++i) {
        std::string tok(token_length(sizeof kPassword), '\0');
        ring.encrypt(kPassword, sizeof kPassword, tok.data(), kTimestamp);
        toks.push_back(std::move(tok));
    }
    return toks;
}

// Decrypts the pool's tokens in turn for as long as the benchmark runs.
void decrypt_pool(benchmark::State& state, const Keyring& ring, const std::vector<std::string>& toks,
                  std::vector<std::uint8_t>& out) {
    std::size_t i = 0;
    for (auto _ : state) {
        Decrypted d = ring.decrypt(toks[i++ % kPool], out.data());
        benchmark::DoNotOptimize(d);
        benchmark::ClobberMemory();
    }
}

// --- through the core ------------------------------------------------------

void BM_Keyring_Encrypt(benchmark::State& state) {
    const Keyring ring = Keyring::parse(kKey);
    std::string out(token_length(sizeof kPassword), '\0');
    for (auto _ : state) {
        ring.encrypt(kPassword, sizeof kPassword, out.data(), kTimestamp, kIv);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_Keyring_Encrypt);

// As the extension calls it: fresh random IV and the current time.
void BM_Keyring_EncryptRandomIv(benchmark::State& state) {
    const Keyring ring = Keyring::parse(kKey);
    std::string out(token_length(sizeof kPassword), '\0');
    for (auto _ : state) {
        ring.encrypt(kPassword, sizeof kPassword, out.data());
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_Keyring_EncryptRandomIv);

void BM_Keyring_Decrypt(benchmark::State& state) {
    const Keyring ring = Keyring::parse(kKey);
    const std::vector<std::string> toks = make_tokens(ring);
    std::vector<std::uint8_t> out(plaintext_bound(toks[0].size()));
    decrypt_pool(state, ring, toks, out);
    require(std::memcmp(out.data(), kPassword, sizeof kPassword) == 0, "decrypt gave other bytes");
}
BENCHMARK(BM_Keyring_Decrypt);

// A ring of 10 fresh keys; keys receives them in order.
Keyring ten_key_ring(std::vector<std::string>& keys) {
    std::string text;
    for (int i = 0; i < 10; ++i) {
        keys.push_back(Keyring::generate_key());
        text += (i ? "," : "") + keys.back();
    }
    return Keyring::parse(text);
}

// A 10-key ring whose key at 1-based position `range(0)` made the tokens. The
// keyring tries the key that authenticated the last token first, so a run of
// tokens under one key costs one HMAC each wherever that key stands.
void BM_Keyring_DecryptKeyPosition(benchmark::State& state) {
    const std::size_t position = static_cast<std::size_t>(state.range(0));
    std::vector<std::string> keys;
    const Keyring ring = ten_key_ring(keys);
    const std::vector<std::string> toks = make_tokens(Keyring::parse(keys[position - 1]));
    std::vector<std::uint8_t> out(plaintext_bound(toks[0].size()));
    decrypt_pool(state, ring, toks, out);
    require(ring.key_index(toks[0]) == position - 1, "wrong key position");
}
BENCHMARK(BM_Keyring_DecryptKeyPosition)->Arg(1)->Arg(2)->Arg(10);

// The worst case for that order: tokens alternate between the keys at
// positions 1 and 10, so every token first fails the other one's HMAC (and a
// position-10 token after a position-1 token tries the nine keys before it).
void BM_Keyring_DecryptAlternatingKeys(benchmark::State& state) {
    std::vector<std::string> keys;
    const Keyring ring = ten_key_ring(keys);
    const std::vector<std::string> first = make_tokens(Keyring::parse(keys[0]));
    const std::vector<std::string> last = make_tokens(Keyring::parse(keys[9]));
    std::vector<std::string> toks;
    for (std::size_t i = 0; i < kPool; ++i) toks.push_back(i % 2 ? last[i] : first[i]);
    std::vector<std::uint8_t> out(plaintext_bound(toks[0].size()));
    decrypt_pool(state, ring, toks, out);
    require(ring.key_index(toks[1]) == 9 && ring.key_index(toks[0]) == 0, "wrong key positions");
}
BENCHMARK(BM_Keyring_DecryptAlternatingKeys);

// --- raw OpenSSL baseline ---------------------------------------------------

struct RawKey {
    EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr);
    EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    EVP_CIPHER_CTX* enc = EVP_CIPHER_CTX_new();
    EVP_CIPHER_CTX* dec = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX* mac = nullptr;

    explicit RawKey(const std::uint8_t* key32) {
        require(cipher && hmac && enc && dec, "OpenSSL setup");
        mac = EVP_MAC_CTX_new(hmac);
        char digest[] = "SHA256";
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
        require(mac && EVP_MAC_init(mac, key32, 16, params) == 1, "HMAC setup");
        require(EVP_EncryptInit_ex2(enc, cipher, key32 + 16, nullptr, nullptr) == 1 &&
                    EVP_DecryptInit_ex2(dec, cipher, key32 + 16, nullptr, nullptr) == 1,
                "AES setup");
    }
    ~RawKey() {
        EVP_MAC_CTX_free(mac);
        EVP_CIPHER_CTX_free(enc);
        EVP_CIPHER_CTX_free(dec);
        EVP_MAC_free(hmac);
        EVP_CIPHER_free(cipher);
    }
    RawKey(const RawKey&) = delete;
    RawKey& operator=(const RawKey&) = delete;

    // Re-init without a key reuses the prepared inner/outer pads.
    void sign(const std::uint8_t* data, std::size_t n, std::uint8_t out[32]) {
        std::size_t len = 0;
        if (EVP_MAC_init(mac, nullptr, 0, nullptr) != 1 || EVP_MAC_update(mac, data, n) != 1 ||
            EVP_MAC_final(mac, out, &len, 32) != 1)
            std::abort();
    }
};

constexpr std::size_t kCt = 48;                 // 32 bytes + a full PKCS7 block
constexpr std::size_t kSigned = 1 + 8 + 16 + kCt;  // 73
constexpr std::size_t kRaw = kSigned + 32;

SecureBytes raw_key() { return *Keyring::decode_key(kKey); }

void BM_RawOpenSSL_Encrypt(benchmark::State& state) {
    RawKey k(raw_key().data());
    std::uint8_t buf[kRaw] = {0x80};
    for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<std::uint8_t>(kTimestamp >> (56 - 8 * i));
    std::memcpy(buf + 9, kIv, 16);
    for (auto _ : state) {
        int l1 = 0, l2 = 0;
        if (EVP_EncryptInit_ex2(k.enc, nullptr, nullptr, kIv, nullptr) != 1 ||
            EVP_EncryptUpdate(k.enc, buf + 25, &l1, kPassword, sizeof kPassword) != 1 ||
            EVP_EncryptFinal_ex(k.enc, buf + 25 + l1, &l2) != 1)
            std::abort();
        k.sign(buf, kSigned, buf + kSigned);
        benchmark::DoNotOptimize(buf);
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_RawOpenSSL_Encrypt);

void BM_RawOpenSSL_Decrypt(benchmark::State& state) {
    // The raw bytes of the same token the Keyring benchmarks decrypt.
    const ParsedToken token = parse_token(make_token(Keyring::parse(kKey)));
    require(token.raw.size() == kRaw, "token size");
    RawKey k(raw_key().data());
    std::uint8_t plain[kCt];
    for (auto _ : state) {
        std::uint8_t mac[32];
        k.sign(token.raw.data(), kSigned, mac);
        if (CRYPTO_memcmp(mac, token.raw.data() + kSigned, 32) != 0) std::abort();
        int l1 = 0, l2 = 0;
        if (EVP_DecryptInit_ex2(k.dec, nullptr, nullptr, token.raw.data() + 9, nullptr) != 1 ||
            EVP_DecryptUpdate(k.dec, plain, &l1, token.raw.data() + 25, kCt) != 1 ||
            EVP_DecryptFinal_ex(k.dec, plain + l1, &l2) != 1)
            std::abort();
        benchmark::DoNotOptimize(plain);
        benchmark::ClobberMemory();
    }
    require(std::memcmp(plain, kPassword, sizeof kPassword) == 0, "raw decrypt gave other bytes");
}
BENCHMARK(BM_RawOpenSSL_Decrypt);

}  // namespace

BENCHMARK_MAIN();
