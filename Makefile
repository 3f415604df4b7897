# PGXS build of the extension: the C glue (src/pg/*.c), the exception
# boundary (src/pg/bridge.cpp) and the C++ core (src/core/*.cpp) in one module.
MODULE_big = conn_crypto
EXTENSION = conn_crypto
# The install script is assembled from one file per concept.
DATA_built = extension/conn_crypto--1.0.sql
EXTRA_CLEAN = extension/conn_crypto--1.0.sql

OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/pg/*.c))) \
       $(patsubst %.cpp,%.o,$(sort $(wildcard src/pg/*.cpp) $(wildcard src/core/*.cpp) $(wildcard src/core/kms/*.cpp)))

PG_CPPFLAGS = -I$(srcdir)/src/core -I$(srcdir)/src/pg
PG_CXXFLAGS = -std=c++17 -Wno-missing-field-initializers
SHLIB_LINK = -lssl -lcrypto -lstdc++

REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=conn_crypto

# Track header dependencies (.deps/), so a changed header rebuilds every object using it.
override autodepend = yes

# No LLVM bitcode for JIT inlining: it would need clang++ matching the server build.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

extension/conn_crypto--1.0.sql: $(sort $(wildcard extension/parts/*.sql))
	cat $^ > $@
