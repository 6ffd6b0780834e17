# pg_warden — PGXS build of the extension, plus convenience targets.
#   make && make install    build and install into the server pg_config names
#   make test               the whole test suite (same as scripts/test)
#   make demo               the demo (same as scripts/demo)
#   make deb                Debian packages into build-deb/ (same as scripts/deb)

MODULE_big = pg_warden
OBJS = $(patsubst %.cpp,%.o,$(wildcard extension/src/*.cpp))
MODULEDIR = extension
DATA = extension/pg_warden.control
PGFILEDESC = "pg_warden - connection usage, admission and idle policies"

# Extension versions (docs/packaging.md). The newest version's install script
# is assembled from extension/sql/*.sql, one file per subsystem; released
# versions are frozen in extension/versions/ (their install scripts, kept for
# the upgrade test, and every upgrade script), never edited again.
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" extension/pg_warden.control)
DATA += $(wildcard extension/versions/pg_warden--*.sql)
DATA_built = pg_warden--$(EXTVERSION).sql
EXTRA_CLEAN = pg_warden--$(EXTVERSION).sql

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

# Always re-assembled (cheap): a renamed or removed part must not leave a stale script.
pg_warden--$(EXTVERSION).sql: $(sort $(wildcard extension/sql/*.sql)) FORCE
	cat $(filter-out FORCE,$^) > $@
FORCE:

# Debian packages into build-deb/ (docs/packaging.md).
.PHONY: deb
deb:
	scripts/deb

.PHONY: test demo bench
test:
	scripts/test
demo:
	scripts/demo
bench:
	bench/run
