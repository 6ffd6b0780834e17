"""The PGXN distribution metadata (META.json, spec 1.0.0: https://pgxn.org/meta/spec.txt)
and the version numbers that must agree: the control file's default_version,
META.json, the Debian changelog and CMake's project version. No server."""
import json
import os
import re
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+)?$")
# The spec's license keys (section "license").
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
            "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
            "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0",
            "ssleay", "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown"}


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def meta():
    return json.loads(read("META.json"))


def default_version():
    return re.search(r"^default_version\s*=\s*'([^']+)'", read("extension/pg_warden.control"),
                     re.M).group(1)


def semver_of(extversion: str) -> str:
    """'1.1' -> '1.1.0': PGXN wants semantic versions, extensions use major.minor."""
    parts = extversion.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def test_required_fields_are_valid():
    m = meta()
    for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
        assert key in m, f"META.json lacks the required key {key}"
    assert m["name"] == "pg_warden"
    assert re.fullmatch(r"[A-Za-z0-9_-]{2,}", m["name"])
    assert isinstance(m["abstract"], str) and m["abstract"].strip()
    assert SEMVER.match(m["version"]), m["version"]
    maintainers = m["maintainer"] if isinstance(m["maintainer"], list) else [m["maintainer"]]
    assert maintainers and all(isinstance(x, str) and x.strip() for x in maintainers)
    licenses = m["license"] if isinstance(m["license"], list) else [m["license"]]
    assert all(x in LICENSES for x in licenses), licenses
    assert m["meta-spec"]["version"] == "1.0.0"
    assert m["meta-spec"]["url"] == "https://pgxn.org/meta/spec.txt"
    ext = m["provides"]["pg_warden"]
    for key in ("file", "version"):
        assert key in ext, f"provides.pg_warden lacks {key}"
    assert SEMVER.match(ext["version"])
    assert os.path.isfile(os.path.join(ROOT, ext["file"])), ext["file"]
    if "docfile" in ext:
        assert os.path.isfile(os.path.join(ROOT, ext["docfile"]))
    assert m["prereqs"]["runtime"]["requires"]["PostgreSQL"] == "15.0.0"
    assert m.get("release_status", "stable") in ("stable", "testing", "unstable")


def test_versions_agree_with_the_control_file():
    m = meta()
    want = semver_of(default_version())
    assert m["version"] == want
    assert m["provides"]["pg_warden"]["version"] == want
    # The Debian package and the daemon carry the same release number.
    changelog = read("debian/changelog").splitlines()[0]
    assert re.match(rf"pg-warden \({re.escape(want)}-\d+\)", changelog), changelog
    assert re.search(rf"project\(pg_warden_daemon VERSION {re.escape(want)}\b",
                     read("CMakeLists.txt"))


def test_every_version_has_an_upgrade_path():
    """Each frozen version has an upgrade script to the next one, up to default_version."""
    files = os.listdir(os.path.join(ROOT, "extension", "versions"))
    key = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    installs = sorted({m.group(1) for f in files
                       if (m := re.fullmatch(r"pg_warden--([\d.]+)\.sql", f))}, key=key)
    assert default_version() not in installs, "the newest version's script is built, not frozen"
    chain = installs + [default_version()]
    for a, b in zip(chain, chain[1:]):
        assert f"pg_warden--{a}--{b}.sql" in files, f"no upgrade script from {a} to {b}"


def test_json_is_what_pgxn_tools_parse():
    # The file must be strict JSON (no comments, no trailing commas).
    subprocess.run(["/usr/bin/python3", "-m", "json.tool", os.path.join(ROOT, "META.json")],
                   check=True, capture_output=True)
