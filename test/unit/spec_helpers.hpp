// Shared helpers for unit tests: spec vector loading and RFC 3339 times.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>

namespace test_helpers {

inline nlohmann::json load_vectors(const std::string& name) {
    std::ifstream in(std::string(FERNET_SPEC_DIR) + "/" + name);
    if (!in) throw std::runtime_error("cannot open spec vectors " + name);
    return nlohmann::json::parse(in);
}

// Days since 1970-01-01 of a proleptic Gregorian date.
inline std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

// "1985-10-26T01:20:00-07:00" -> seconds since the epoch.
inline std::int64_t parse_rfc3339(const std::string& s) {
    int y, mo, d, h, mi, se, oh, om;
    char sign;
    if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d%c%d:%d", &y, &mo, &d, &h, &mi, &se, &sign, &oh, &om) != 9)
        throw std::runtime_error("bad time " + s);
    std::int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    std::int64_t off = oh * 3600 + om * 60;
    return sign == '-' ? t + off : t - off;
}

}  // namespace test_helpers
