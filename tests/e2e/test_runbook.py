"""docs/operations.md's runbook ("what to do at 80 %, 90 %, 95 %"), run top
to bottom against a server in trouble: every SQL block of the section is
executed in the order it is written, and what the text says it gives is
checked. The only change to the SQL: the idle-age thresholds ('30 min',
'5 min') become '1 s', so that the sessions this test made a few seconds
ago count as old."""
import os
import re
import time

import psycopg2
import pytest

from clients import close_all, connect, try_connect

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operations.md")


def runbook_blocks():
    text = open(DOC, encoding="utf-8").read()
    start = text.index("## Runbook: what to do at 80 %, 90 %, 95 %")
    end = text.index("\n## ", start + 10)
    section = text[start:end]
    blocks = []
    for m in re.finditer(r"^( *)```sql\n(.*?)^\1```", section, re.S | re.M):
        indent = len(m.group(1))
        sql = "\n".join(line[indent:] for line in m.group(2).splitlines())
        heading = section.rfind("\n### ", 0, m.start())
        title = section[heading + 5:section.index("\n", heading + 5)] if heading >= 0 else "before"
        blocks.append((title, sql))
    return section, blocks


def statements(sql):
    """The statements of a block, comments kept out, '30 min'/'5 min' made '1 s'."""
    out, cur = [], []
    for line in sql.splitlines():
        code = re.sub(r"--.*$", "", line).rstrip()
        if not code.strip():
            continue
        cur.append(code)
        if code.endswith(";"):
            stmt = "\n".join(cur)
            out.append(re.sub(r"'(30|5) min'", "'1 s'", stmt))
            cur = []
    assert not cur, f"unterminated statement in the runbook: {cur}"
    return out


def says(section, text):
    """Does the section say `text` (line breaks and indentation aside)?"""
    return " ".join(text.split()) in " ".join(section.split())


def run(conn, stmt):
    with conn.cursor() as cur:
        cur.execute(stmt)
        cols = [d.name for d in cur.description] if cur.description else []
        rows = cur.fetchall() if cur.description else []
    return [dict(zip(cols, r)) for r in rows]


def test_runbook_top_to_bottom(make_cluster):
    section, blocks = runbook_blocks()
    titles = [t for t, _ in blocks]
    assert titles[0] == "before" and any(t.startswith("At 80") for t in titles) and \
        any(t.startswith("At 95") for t in titles) and titles[-1] == "After the incident", titles

    # 40 - 3 superuser-reserved = 37 usable slots.
    c = make_cluster(conf={"max_connections": "40"})
    c.psql("CREATE ROLE ops LOGIN; CREATE ROLE app_api LOGIN; CREATE ROLE reports LOGIN; "
           "GRANT pg_signal_backend TO ops")
    dba = psycopg2.connect(c.dsn())
    dba.autocommit = True
    results = {}

    def block(title):
        out = []
        for t, sql in blocks:
            if t == title:
                for stmt in statements(sql):
                    out.append((stmt, run(dba, stmt)))
        results[title] = out
        return out

    # Before an incident: the ops headroom (reserved slots), and the pool budget
    # the text gives inline.
    block("before")
    assert says(section, "SELECT warden.set_budget('api', 40, application => 'api-%')")
    run(dba, "SELECT warden.set_budget('api', 40, application => 'api-%')")

    # The trouble: an over-sized idle pool, a reports job, one forgotten transaction.
    pool = connect(c, "app_api", "api-1", 20)
    reports = connect(c, "reports", "nightly", 6)
    forgot = connect(c, "app_api", "api-2", 1)[0]
    forgot.autocommit = False
    forgot.cursor().execute("SELECT 1")  # idle in transaction from now on
    # 1 DBA + 27 clients = 28 of 37 = 75.7 %; one more pool of 2 makes 30 = 81 %.
    pool += connect(c, "app_api", "api-3", 2)
    time.sleep(1.5)  # older than the (substituted) 1 s thresholds; the worker samples

    # At 80 %: look.
    out = block("At 80 % (degraded): look")
    server = out[0][1][0]
    assert server["usage_percent"] >= 80 and server["status"] == "degraded", server
    roles = out[1][1]
    assert roles[0]["role"] == "app_api" and roles[0]["connections"] == 23, roles
    apps = {r["application_name"]: r for r in out[2][1]}
    assert apps["api-1"]["idle"] == 20 and apps["api-1"]["active"] == 0, apps
    assert apps["api-2"]["idle_in_transaction"] == 1, apps
    advice = out[3][1]
    assert any(r.get("reclaimable", 0) > 0 for r in advice), advice
    budgets = {r["name"] for r in out[4][1]}
    assert {"ops-headroom", "api"} <= budgets, out[4][1]
    # "Logins that do not match it are refused (53300) once the free slots fall to 5;
    # `ops` still gets in."
    more = connect(c, "app_api", "api-4", 2)  # 32/37: 5 free
    conn, err = try_connect(c, user="app_api", application_name="api-4")
    assert conn is None and "53300" in (err.pgcode or "53300") and "too many" in str(err), err
    ops = psycopg2.connect(c.dsn(user="ops"))
    close_all(more)
    # "idle_in_transaction with a large longest_idle_in_transaction_seconds": the forgotten
    # one shows.
    assert apps["api-2"]["longest_idle_in_transaction_seconds"] >= 1, apps

    # At 90 %: reclaim idle sessions.
    out = block("At 90 % (unhealthy): reclaim idle sessions")
    dry = out[0][1]
    # keep_min 2 per group: api-1 keeps 2 of 20, api-3 keeps its 2, reports keeps 2 of 6;
    # the caller's own session is never touched.
    assert len([r for r in dry if r["application_name"] == "api-1"]) == 18, dry
    assert not [r for r in dry if r["application_name"] == "api-3"], dry
    assert len([r for r in dry if r["role"] == "reports"]) == 4, dry
    assert out[1][1][0]["count"] == 22, out[1][1]      # the same, for real (state idle)
    assert [r["application_name"] for r in out[2][1]] == ["api-2"], out[2][1]
    terminated = int(c.psql("SELECT count(*) FROM warden.terminations "
                            "WHERE source = 'manual' AND NOT dry_run"))
    assert terminated == 23

    # At 95 %: stop the growth.
    out = block("At 95 %: stop the growth")
    overrides = out[1][1]
    assert [(o["role"], o["max_connections"]) for o in overrides] == [("reports", 2)], overrides
    conn, err = try_connect(c, user="reports", application_name="nightly")
    assert conn is None and "too many connections" in str(err), err
    assert "incident 1234" in str(err), err  # the DETAIL names the override and its reason
    # "Undo: SELECT warden.open_admission(role => 'reports');"
    assert says(section, "SELECT warden.open_admission(role => 'reports');")
    run(dba, "SELECT warden.open_admission(role => 'reports')")
    conn, err = try_connect(c, user="reports", application_name="nightly")
    assert conn is not None, err
    conn.close()
    # The longer-lasting limit, and its undo, as written.
    assert says(section, "SELECT warden.set_budget('reports-cap', 20, role => 'reports');")
    run(dba, "SELECT warden.set_budget('reports-cap', 20, role => 'reports')")
    run(dba, "SELECT warden.drop_budget('reports-cap')")

    # After the incident.
    out = block("After the incident")
    assert out[0][1] == [], out[0][1]                   # overrides: "should be empty"
    assert len([r for r in out[1][1] if not r["dry_run"]]) == 23, out[1][1]
    assert "reports-cap" not in {r["name"] for r in out[2][1]}
    close_all(pool + reports + [forgot, ops, dba])
