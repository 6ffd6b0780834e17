# pg_warden — PGXS build of the extension, plus convenience targets.
#   make && make install    build and install into the server pg_config names
#   make installcheck       the pg_regress tests on a temp instance of the installed server
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
EXTRA_CLEAN = pg_warden--$(EXTVERSION).sql regress-destdir.conf

# pg_regress (make installcheck): tests/regress/sql/*.sql against
# tests/regress/expected/*.out, on a temp instance of the installed server's
# binaries (pg_warden must be preloaded, so not the running server) on a free
# port. The temp instance cannot run as root: run it as the postgres user from
# a directory that user can write (scripts/regress does). docs/testing.md.
REGRESS = $(sort $(basename $(notdir $(wildcard $(srcdir)/tests/regress/sql/*.sql))))
REGRESS_PORT ?= $(shell python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null)
REGRESS_OPTS = --inputdir=$(srcdir)/tests/regress --temp-config=$(srcdir)/tests/regress.conf \
	--temp-instance=./tmp_check $(if $(REGRESS_PORT),--port=$(REGRESS_PORT))
# With DESTDIR (pg_buildext installcheck with a package name: the package's
# files, not installed yet) the temp instance loads the extension from there.
ifdef DESTDIR
REGRESS_PREP = regress-destdir.conf
REGRESS_OPTS += --temp-config=regress-destdir.conf
endif

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

regress-destdir.conf: FORCE
	printf "extension_destdir = '%s'\ndynamic_library_path = '%s:\$$libdir'\n" \
		'$(abspath $(DESTDIR))' '$(abspath $(DESTDIR))$(pkglibdir)' > $@

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
