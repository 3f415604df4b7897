// The exception guard shared by the bridge files: runs core code and turns
// every exception into a cc_error. C++ only; never includes PostgreSQL.
#pragma once

#include "bridge.h"
#include "errors.hpp"

#include <cstdio>
#include <new>

namespace conn_crypto::bridge {

inline cc_status status_of(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::MalformedToken: return CC_ERR_MALFORMED;
        case ErrorKind::InvalidToken: return CC_ERR_INVALID;
        case ErrorKind::Expired: return CC_ERR_EXPIRED;
        case ErrorKind::FutureTimestamp: return CC_ERR_FUTURE;
        case ErrorKind::BadKey: return CC_ERR_BAD_KEY;
        case ErrorKind::NoKey: return CC_ERR_NO_KEY;
        case ErrorKind::TooLarge: return CC_ERR_TOO_LARGE;
        case ErrorKind::Crypto: return CC_ERR_CRYPTO;
    }
    return CC_ERR_INTERNAL;
}

inline void set_error(cc_error* err, cc_status status, const char* message) {
    if (!err) return;
    err->status = status;
    std::snprintf(err->message, sizeof err->message, "%s", message);
}

// Runs f; converts every exception into a cc_error (status remapped by
// remap when given, e.g. every KMS failure to CC_ERR_KMS). False on failure.
template <class F>
bool guarded(cc_error* err, F&& f, cc_status remap = CC_OK) noexcept {
    try {
        f();
        if (err) err->status = CC_OK;
        return true;
    } catch (const Error& e) {
        set_error(err, remap != CC_OK ? remap : status_of(e.kind()), e.what());
    } catch (const std::bad_alloc&) {
        set_error(err, CC_ERR_NO_MEMORY, "out of memory");
    } catch (...) {
        set_error(err, CC_ERR_INTERNAL, "internal error in conn_crypto core");
    }
    return false;
}

}  // namespace conn_crypto::bridge
