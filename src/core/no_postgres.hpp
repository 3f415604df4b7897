// The core must stay independent of PostgreSQL: it is unit-tested, fuzzed and
// benchmarked without a server, and it throws C++ exceptions that must never
// meet PostgreSQL's longjmp-based error handling. Every core header includes
// this file, so a translation unit that mixes both fails to compile.
#pragma once
#if defined(PG_VERSION_NUM) || defined(POSTGRES_H) || defined(POSTGRES_EXT_H)
#error "src/core must not be compiled together with PostgreSQL headers"
#endif
