"""Extension upgrades: from every earlier version, ALTER EXTENSION pg_warden
UPDATE gives exactly the objects of a fresh install of the newest version and
keeps the rows of the configuration tables.

The versions come from the installed files (pg_warden--V.sql next to the
control file, as `make install` puts them), so a new release is covered
without touching this test. Two throwaway servers: one with a fresh install
of the newest version (the reference), one per earlier version that is
installed, filled and updated. The extension can only be created in the
database named by warden.database (`postgres` here), hence two servers and not
two databases.

pg_dump leaves out the members of an extension (it dumps `CREATE EXTENSION`
instead, and nothing at all under -n), so both servers first detach every
member (`ALTER EXTENSION pg_warden DROP ...`) after recording the list of
members and the configuration tables (extconfig); `pg_dump -s -n warden` then
shows every object with its definition, comments and privileges. The only
normalisation is dropping pg_dump's `\\restrict`/`\\unrestrict` lines, whose
key is random per run.
"""
import os
import re
import subprocess

import pytest

import pgcluster

def extension_dir() -> str:
    pg_config = os.path.join(pgcluster.PG_BIN, "pg_config")
    share = subprocess.run([pg_config, "--sharedir"], check=True, text=True,
                           capture_output=True).stdout.strip()
    # A private install (PG_WARDEN_PREFIX) is a copy of the tree: pg_config
    # still names the system path, so prefer the copy next to PG_BIN.
    prefix = pgcluster.PG_BIN.split("/usr/lib/postgresql/")[0]
    if prefix and os.path.isdir(prefix + share):
        share = prefix + share
    return os.path.join(share, "extension")


def version_key(v: str):
    return tuple(int(p) for p in v.split("."))


def versions() -> tuple[list[str], str]:
    d = extension_dir()
    with open(os.path.join(d, "pg_warden.control")) as f:
        newest = re.search(r"^default_version\s*=\s*'([^']+)'", f.read(), re.M).group(1)
    found = {m.group(1) for f in os.listdir(d)
             if (m := re.fullmatch(r"pg_warden--(\d+(?:\.\d+)*)\.sql", f))}
    assert newest in found, f"no install script for default_version {newest} in {d}"
    return sorted((v for v in found if v != newest), key=version_key), newest


EARLIER, NEWEST = versions()


def members(c: pgcluster.Cluster) -> list[tuple[str, str]]:
    """(type, identity) of every member of the extension, sorted."""
    out = c.psql("""
        SELECT a.type || E'\\t' || a.identity
        FROM pg_depend d
        JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
        CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) a
        WHERE e.extname = 'pg_warden' AND d.deptype = 'e'
        ORDER BY 1""")
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if line]


def config_tables(c: pgcluster.Cluster) -> list[str]:
    out = c.psql("""
        SELECT t::regclass::text || ' ' || coalesce(w, '')
        FROM pg_extension e,
             unnest(e.extconfig, e.extcondition) AS u(t, w)
        WHERE e.extname = 'pg_warden' ORDER BY 1""")
    return out.splitlines()


def detached_schema_dump(c: pgcluster.Cluster) -> str:
    """pg_dump -s after detaching every member of the extension: the whole
    database rather than -n warden, so that the members outside the schema
    (the foreign-data wrapper and its server) are compared too."""
    sql = ""
    for typ, identity in members(c):
        keyword = {"composite type": "TYPE"}.get(typ, typ.upper().replace("-", " "))
        sql += f"ALTER EXTENSION pg_warden DROP {keyword} {identity};\n"
    c.psql(sql)
    assert members(c) == []
    res = subprocess.run([os.path.join(pgcluster.PG_BIN, "pg_dump"), "-s",
                          "-h", c.sockdir, "-p", str(c.port), "-U", "postgres", "postgres"],
                         check=True, text=True, capture_output=True)
    lines = [ln for ln in res.stdout.splitlines()
             if not ln.startswith(("\\restrict ", "\\unrestrict "))]
    return "\n".join(lines)


def fill_configuration(c: pgcluster.Cluster) -> None:
    """Rows in every configuration table, through the functions that every
    released version has (named arguments, as users call them)."""
    c.psql("""
        SELECT warden.set_budget(name => 'workers', max_connections => 30,
                                 application => 'worker-%');
        SELECT warden.set_budget(name => 'ops-headroom', max_connections => NULL,
                                 role => 'ops', reserved => 5);
        SELECT warden.set_budget(name => 'o''dd "name"', max_connections => 7,
                                 role => 'r', database => 'postgres');
        SELECT warden.add_idle_policy(name => 'reports-night', idle_timeout => '10 min',
                                      application => 'reports%', keep_min => 5,
                                      schedule => '* 0-5 * * *');
        SELECT warden.add_idle_policy(name => 'dry', idle_timeout => '1 h',
                                      state => 'idle in transaction', dry_run => true);
        UPDATE warden.idle_policies SET enabled = false WHERE name = 'dry';
    """)


def table_rows(c: pgcluster.Cluster, table: str, columns: list[str]) -> list[str]:
    cols = ", ".join(f'"{col}"' for col in columns)
    return c.psql(f"SELECT ({cols})::text FROM {table} ORDER BY 1").splitlines()


def table_columns(c: pgcluster.Cluster, table: str) -> list[str]:
    return c.psql(f"""SELECT attname FROM pg_attribute
                      WHERE attrelid = '{table}'::regclass AND attnum > 0
                        AND NOT attisdropped ORDER BY attnum""").splitlines()


@pytest.fixture(scope="module")
def reference():
    """The newest version, freshly installed: members, config tables, dump."""
    with pgcluster.Cluster(name="fresh").init() as c:
        c.start()
        c.psql("CREATE EXTENSION pg_warden")
        assert c.psql("SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'") == NEWEST
        yield {"members": members(c), "config": config_tables(c), "dump": detached_schema_dump(c)}


def test_there_is_an_earlier_version():
    assert EARLIER, "no earlier version installed: the upgrade path is untested"
    assert "1.0" in EARLIER


@pytest.mark.parametrize("old", EARLIER)
def test_update_from_earlier_version_equals_fresh_install(old, reference):
    with pgcluster.Cluster(name=f"from-{old}").init() as c:
        c.start()
        c.psql(f"CREATE EXTENSION pg_warden VERSION '{old}'")
        assert c.psql("SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'") == old
        fill_configuration(c)
        tables = [line.split(" ")[0] for line in config_tables(c)]
        assert tables, "no configuration table registered with pg_extension_config_dump"
        before = {}
        for t in tables:
            cols = table_columns(c, t)
            before[t] = (cols, table_rows(c, t, cols))
            assert before[t][1], f"{t} was not filled"

        c.psql("ALTER EXTENSION pg_warden UPDATE")

        # \dx: the newest version is installed.
        assert c.psql("SELECT extversion FROM pg_extension WHERE extname = 'pg_warden'") == NEWEST
        # Rows kept, equal in every column they had.
        for t, (cols, rows) in before.items():
            assert table_rows(c, t, cols) == rows, f"rows of {t} changed by the update"
        # The same members and configuration tables as a fresh install...
        assert members(c) == reference["members"]
        assert config_tables(c) == reference["config"]
        # ...with the same definitions, comments and privileges.
        dump = detached_schema_dump(c)
        if dump != reference["dump"]:
            import difflib
            diff = "\n".join(difflib.unified_diff(reference["dump"].splitlines(),
                                                  dump.splitlines(), "fresh", f"from {old}",
                                                  lineterm="", n=2))
            pytest.fail(f"pg_dump -s after the update from {old} differs:\n{diff}")
