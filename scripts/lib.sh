# Shared shell helpers for pg_warden's scripts (sourced, not run).
# PG_WARDEN_PREFIX: when set, the extension is installed with DESTDIR into a
# private copy of PostgreSQL under that directory instead of the system one,
# so that several work trees can build and test side by side.

PG_SYSTEM_BIN=/usr/lib/postgresql/15/bin

warden_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Sets PG_BIN (exported) and installs the built extension where it belongs.
warden_install_extension() {
  local root; root=$(warden_root)
  if [ -n "${PG_WARDEN_PREFIX:-}" ]; then
    if [ ! -x "$PG_WARDEN_PREFIX/usr/lib/postgresql/15/bin/postgres" ]; then
      mkdir -p "$PG_WARDEN_PREFIX/usr/lib/postgresql" "$PG_WARDEN_PREFIX/usr/share/postgresql"
      cp -a /usr/lib/postgresql/15 "$PG_WARDEN_PREFIX/usr/lib/postgresql/"
      cp -a /usr/share/postgresql/15 "$PG_WARDEN_PREFIX/usr/share/postgresql/"
      chmod 755 "$PG_WARDEN_PREFIX"
    fi
    make -s -C "$root" install DESTDIR="$PG_WARDEN_PREFIX" >/dev/null
    export PG_BIN="$PG_WARDEN_PREFIX/usr/lib/postgresql/15/bin"
  else
    make -s -C "$root" install >/dev/null
    export PG_BIN="$PG_SYSTEM_BIN"
  fi
}

# Runs a command as the unprivileged server user when we are root.
as_server_user() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$@"
  else
    "$@"
  fi
}

free_port() {
  /usr/bin/python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}
