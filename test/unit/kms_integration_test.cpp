// KMIP provider against a running pykmip-server. Skipped unless CC_KMIP_DIR
// (the directory test/kmip/start_server.sh filled) and CC_KMIP_PORT are set;
// test/kmip/run_kmip_tests.sh sets them. CC_KMIP_KEY_ID names an active AES
// key (created here with PyKMIP's client when absent). With
// CC_KMIP_EXPECT_DOWN=1 only the "server stopped" test runs.
#include "errors.hpp"
#include "kms/kmip_provider.hpp"
#include "kms/provider.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <dirent.h>
#include <sys/wait.h>

using namespace conn_crypto;
using namespace conn_crypto::kms;

namespace {

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
}

bool expect_down() { return env("CC_KMIP_EXPECT_DOWN") && std::string(env("CC_KMIP_EXPECT_DOWN")) == "1"; }

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string dir() { return env("CC_KMIP_DIR"); }
int port() { return std::atoi(env("CC_KMIP_PORT")); }

std::string helper_path() {
    if (const char* h = env("CC_KMIP_HELPER")) return h;
    std::string self = __FILE__;  // .../test/unit/kms_integration_test.cpp
    return self.substr(0, self.rfind("/unit/")) + "/kmip/pykmip_client.py";
}

// Runs the PyKMIP helper; returns its trimmed stdout, or throws when it fails.
std::string helper(const std::string& args) {
    std::string cmd = "/usr/bin/python3 '" + helper_path() + "' " + args + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) throw std::runtime_error("popen failed");
    std::string out;
    char buf[512];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    int status = ::pclose(p);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (status != 0) throw std::runtime_error("helper failed: " + cmd + "\n" + out);
    return out;
}

std::string hex(const SecureBytes& b) {
    static const char* d = "0123456789abcdef";
    std::string s;
    for (auto c : b) {
        s.push_back(d[c >> 4]);
        s.push_back(d[c & 15]);
    }
    return s;
}

const std::string& key_id() {
    static std::string id = [] {
        if (const char* k = env("CC_KMIP_KEY_ID")) return std::string(k);
        return helper("create-key '" + dir() + "' " + std::to_string(port()));
    }();
    return id;
}

KmsConfig config(const std::string& version = "1.4", const std::string& client = "client") {
    KmsConfig c;
    c.conn_type = "kmip";
    c.host = "127.0.0.1";
    c.port = port();
    c.params["client_cert"] = read_file(dir() + "/" + client + ".crt");
    c.params["client_key"] = read_file(dir() + "/" + client + ".key");
    c.params["ca_cert"] = read_file(dir() + "/ca.crt");
    c.params["key_id"] = key_id();
    c.params["kmip_version"] = version;
    c.connect_timeout_ms = 3000;
    c.read_timeout_ms = 10000;
    return c;
}

SecureBytes random_key() {
    SecureBytes k(32);
    FILE* f = std::fopen("/dev/urandom", "rb");
    if (!f || std::fread(k.data(), 1, k.size(), f) != k.size()) throw std::runtime_error("urandom");
    std::fclose(f);
    return k;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "<no error>";
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

long long elapsed_ms(const std::function<void()>& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

class KmsIntegration : public ::testing::Test {
protected:
    void SetUp() override {
        if (!env("CC_KMIP_DIR") || !env("CC_KMIP_PORT"))
            GTEST_SKIP() << "set CC_KMIP_DIR and CC_KMIP_PORT (test/kmip/run_kmip_tests.sh does)";
        if (expect_down()) GTEST_SKIP() << "CC_KMIP_EXPECT_DOWN=1: only the server-stopped test runs";
    }
};

class KmsIntegrationDown : public ::testing::Test {
protected:
    void SetUp() override {
        if (!env("CC_KMIP_DIR") || !env("CC_KMIP_PORT") || !expect_down())
            GTEST_SKIP() << "runs after the server was stopped, with CC_KMIP_EXPECT_DOWN=1";
    }
};

}  // namespace

TEST_F(KmsIntegration, RoundTripGcmAtKmip14) {
    auto p = make_provider(config("1.4"));
    SecureBytes key = random_key();
    std::string w = p->wrap(key);
    EXPECT_TRUE(starts_with(w, "kmip1:")) << w;
    EXPECT_LE(w.size(), kMaxWrappedChars);
    EXPECT_EQ(kmip::decode_wrapped(w).mode, kmip::Mode::Gcm);
    EXPECT_EQ(kmip::decode_wrapped(w).key_id, key_id());
    EXPECT_EQ(p->unwrap(w), key);
    std::cout << "[ info     ] GCM wrapped key: " << w.size() << " characters" << std::endl;
}

TEST_F(KmsIntegration, RoundTripCbcAtKmip12) {
    auto p = make_provider(config("1.2"));
    SecureBytes key = random_key();
    std::string w = p->wrap(key);
    EXPECT_EQ(kmip::decode_wrapped(w).mode, kmip::Mode::Cbc);
    EXPECT_LE(w.size(), kMaxWrappedChars);
    EXPECT_EQ(p->unwrap(w), key);
    // A GCM-wrapped key unwraps under a 1.2 configuration too (sent at 1.4).
    std::string g = make_provider(config("1.4"))->wrap(key);
    EXPECT_EQ(p->unwrap(g), key);
}

TEST_F(KmsIntegration, PyKmipDecryptsWhatWeWrapped) {
    for (const char* version : {"1.4", "1.2"}) {
        SecureBytes key = random_key();
        std::string w = make_provider(config(version))->wrap(key);
        std::string plain = helper("decrypt '" + dir() + "' " + std::to_string(port()) + " - '" + w + "'");
        EXPECT_EQ(plain, hex(key)) << version;
    }
}

TEST_F(KmsIntegration, WeUnwrapWhatPyKmipEncrypted) {
    auto p = make_provider(config());
    for (const char* mode : {"gcm", "cbc"}) {
        SecureBytes key = random_key();
        std::string w =
            helper("encrypt '" + dir() + "' " + std::to_string(port()) + " " + key_id() + " " + hex(key) + " " + mode);
        EXPECT_EQ(p->unwrap(w), key) << mode << " " << w;
    }
}

TEST_F(KmsIntegration, StoredKeyIdWinsOnUnwrap) {
    SecureBytes key = random_key();
    std::string w = make_provider(config())->wrap(key);
    KmsConfig other = config();
    other.params["key_id"] = "no-such-key";
    EXPECT_EQ(make_provider(other)->unwrap(w), key);
    other.params.erase("key_id");
    EXPECT_EQ(make_provider(other)->unwrap(w), key);
}

TEST_F(KmsIntegration, UnknownKeyIdIsKeyNotFound) {
    KmsConfig c = config();
    c.params["key_id"] = "999999";
    std::string m = error_of([&] { make_provider(c)->wrap(random_key()); });
    EXPECT_TRUE(starts_with(m, "KMS key not found: the server has no key '999999'")) << m;
    std::cout << "[ info     ] " << m << std::endl;
    // Unwrap of a key naming a missing key id.
    kmip::WrappedKey w = kmip::decode_wrapped(make_provider(config())->wrap(random_key()));
    w.key_id = "999999";
    m = error_of([&] { make_provider(config())->unwrap(kmip::encode_wrapped(w)); });
    EXPECT_TRUE(starts_with(m, "KMS key not found")) << m;
}

TEST_F(KmsIntegration, InactiveKeyIsKeyNotActive) {
    std::string inactive = helper("create-key '" + dir() + "' " + std::to_string(port()) + " --inactive");
    KmsConfig c = config();
    c.params["key_id"] = inactive;
    std::string m = error_of([&] { make_provider(c)->wrap(random_key()); });
    EXPECT_TRUE(starts_with(m, "KMS key not active: key '" + inactive + "'")) << m;
    std::cout << "[ info     ] " << m << std::endl;
}

TEST_F(KmsIntegration, TamperedWrappedKeyFailsToUnwrap) {
    auto p = make_provider(config());
    kmip::WrappedKey w = kmip::decode_wrapped(p->wrap(random_key()));
    w.ciphertext[3] ^= 0x01;
    std::string m = error_of([&] { p->unwrap(kmip::encode_wrapped(w)); });
    EXPECT_TRUE(starts_with(m, "KMS unwrap failed: the server could not decrypt")) << m;
    std::cout << "[ info     ] " << m << std::endl;
    w.ciphertext[3] ^= 0x01;
    w.tag[0] ^= 0x80;
    m = error_of([&] { p->unwrap(kmip::encode_wrapped(w)); });
    EXPECT_TRUE(starts_with(m, "KMS unwrap failed")) << m;
}

TEST_F(KmsIntegration, WrongClientCertificateIsRejected) {
    KmsConfig c = config("1.4", "other_client");
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { make_provider(c)->wrap(random_key()); }); });
    EXPECT_TRUE(starts_with(m, "KMS certificate rejected")) << m;
    EXPECT_LT(ms, 3000);
    std::cout << "[ info     ] " << m << std::endl;
}

TEST_F(KmsIntegration, ServerCertificateIsVerified) {
    // Trust anchor that did not sign the server certificate.
    KmsConfig c = config();
    c.params["ca_cert"] = read_file(dir() + "/other_ca.crt");
    std::string m = error_of([&] { make_provider(c)->wrap(random_key()); });
    EXPECT_TRUE(starts_with(m, "KMS TLS handshake failed: server certificate rejected")) << m;
    std::cout << "[ info     ] " << m << std::endl;

    // The certificate is for IP 127.0.0.1, not for the name "localhost".
    c = config();
    c.params["server_name"] = "localhost";
    m = error_of([&] { make_provider(c)->wrap(random_key()); });
    EXPECT_TRUE(starts_with(m, "KMS TLS handshake failed: server certificate rejected")) << m;
    EXPECT_NE(m.find("mismatch"), std::string::npos) << m;
    std::cout << "[ info     ] " << m << std::endl;

    c = config();
    c.params["server_name"] = "127.0.0.2";
    m = error_of([&] { make_provider(c)->wrap(random_key()); });
    EXPECT_TRUE(starts_with(m, "KMS TLS handshake failed: server certificate rejected")) << m;
}

static std::size_t open_fds() {
    std::size_t n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d)) ++n;
        ::closedir(d);
    }
    return n;
}

TEST_F(KmsIntegration, ManySequentialCalls) {
    auto p = make_provider(config());
    std::size_t fds_before = open_fds();
    std::vector<std::string> wrapped;
    std::vector<SecureBytes> keys;
    long long ms = elapsed_ms([&] {
        for (int i = 0; i < 10; ++i) {
            keys.push_back(random_key());
            wrapped.push_back(p->wrap(keys.back()));
        }
        for (int i = 0; i < 10; ++i) EXPECT_EQ(p->unwrap(wrapped[i]), keys[i]);
    });
    std::cout << "[ info     ] 20 calls in " << ms << " ms (one TLS connection each)" << std::endl;
    EXPECT_EQ(open_fds(), fds_before);  // every connection's socket was closed
}

TEST_F(KmsIntegration, InterruptDuringARealCallIsHonoured) {
    KmsConfig c = config();
    c.interrupted = [] { return true; };
    std::string m = error_of([&] { make_provider(c)->wrap(random_key()); });
    EXPECT_TRUE(starts_with(m, "KMS request interrupted")) << m;
}

TEST_F(KmsIntegrationDown, ServerStoppedFailsQuicklyAndClearly) {
    auto p = make_provider(config());
    std::string m;
    long long ms = elapsed_ms([&] { m = error_of([&] { p->wrap(random_key()); }); });
    EXPECT_TRUE(starts_with(m, "KMS unreachable: cannot connect to 127.0.0.1:" + std::to_string(port()))) << m;
    EXPECT_LT(ms, 2500);  // refused at once, far below the 5000 ms connect timeout
}
