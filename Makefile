# pg_warden — PGXS build of the extension, plus convenience targets.
#   make && make install    build and install into the server pg_config names
#   make test               the whole test suite (same as scripts/test)
#   make demo               the demo (same as scripts/demo)

MODULE_big = pg_warden
OBJS = $(patsubst %.cpp,%.o,$(wildcard extension/src/*.cpp))
MODULEDIR = extension
DATA = extension/pg_warden.control $(wildcard extension/pg_warden--*.sql)
PGFILEDESC = "pg_warden - connection usage, admission and idle policies"

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)

# PG_CPPFLAGS reaches C and C++; the language flags go to PG_CXXFLAGS only.
PG_CPPFLAGS = -I$(CURDIR)/extension/include
PG_CXXFLAGS = -std=c++17 -Wno-register -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers
SHLIB_LINK += -lstdc++

# The bitcode step ignores PG_CXXFLAGS and fails on C++17 (set before PGXS).
override with_llvm = no

include $(PGXS)

# Server headers as system headers: their warnings are not ours.
override CPPFLAGS := $(patsubst -I$(includedir_server),-isystem $(includedir_server),$(patsubst -I$(includedir_internal),-isystem $(includedir_internal),$(CPPFLAGS)))

.PHONY: test demo bench
test:
	scripts/test
demo:
	scripts/demo
bench:
	bench/run
