"""The security checks piece by piece (fast): advisory matching, bandit mapping, baseline,
secret scanning, online-audit parsing, lint; and the suite's own messages in small runs."""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import shutil
import sys
import threading
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mulm.security.advisories import AdvisoryError, load_advisories, snapshot_date
from pytest_mulm.security.baseline import BaselineError, load_baseline

ROOT = Path(__file__).resolve().parent
ADVISORIES = ROOT / "data" / "advisories"
WORKFLOWS = ROOT / "workflows" / "security"


def _line_of(source: str, needle: str) -> int:
    """1-based line of ``needle`` in a block's source: the truth the messages must give."""
    return next(i for i, line in enumerate(source.splitlines(), start=1) if needle in line)


def _load(name: str) -> Any:
    from pytest_mulm.loader import load_workflow

    return load_workflow(WORKFLOWS / name)


@pytest.fixture(scope="module")
def unsafe() -> Any:
    return _load("unsafe.json")


@pytest.fixture(scope="module")
def unsafe_export(tmp_path_factory: pytest.TempPathFactory, unsafe: Any) -> Path:
    from pytest_mulm.exporting import export_workflow

    return export_workflow(unsafe, "python-package", out_dir=tmp_path_factory.mktemp("exp")).path


def _copy(export: Path, tmp_path: Path) -> Path:
    target = tmp_path / "artifact"
    shutil.copytree(export, target)
    return target


# -- advisories --------------------------------------------------------------------------------


def test_snapshot_folder_matches_a_range_and_names_the_fix() -> None:
    db = load_advisories(ADVISORIES)
    assert db.records == 6 and db.withdrawn == 1  # loguru's record is withdrawn
    report = db.audit(["idna==3.6", "IDNA==3.7", "PyYAML==6.0.4"])
    assert [f.name for f in report.vulnerable] == ["idna"]
    finding = report.vulnerable[0]
    assert finding.advisories[0]["id"] == "PYSEC-2024-60"
    assert finding.advisories[0]["aliases"] == ["CVE-2024-3651"]
    assert finding.line() == "idna==3.6: PYSEC-2024-60 (CVE-2024-3651) fixed in 3.7; raise idna to 3.7 or later"
    assert report.clean == ["IDNA==3.7", "PyYAML==6.0.4"]  # PEP 503 names; PyYAML is past 5.4
    assert not report.unchecked
    assert db.audit(["pyyaml==5.3.1"]).vulnerable[0].advisories[0]["id"] == "PYSEC-2021-142"


def test_two_advisories_recommend_the_version_that_fixes_both() -> None:
    db = load_advisories(ADVISORIES)
    finding = db.audit(["Jinja2==2.10"]).vulnerable[0]
    assert [a["id"] for a in finding.advisories] == ["PYSEC-2019-217", "PYSEC-2021-66"]
    assert [a["fixed"] for a in finding.advisories] == ["2.10.1", "2.11.3"]
    assert finding.fix == "2.11.3"
    assert [a["id"] for a in db.audit(["jinja2==2.10.1"]).vulnerable[0].advisories] == ["PYSEC-2021-66"]
    assert db.audit(["jinja2==2.11.3"]).ok


def test_last_affected_is_inclusive_and_versions_lists_count() -> None:
    db = load_advisories(ADVISORIES)
    py = db.audit(["py==1.11.0"]).vulnerable[0]
    assert py.fix is None and "no release of py fixes all of them" in py.line()
    assert db.audit(["py==1.11.1"]).ok
    assert db.audit(["gratient==0.5"]).vulnerable[0].advisories[0]["id"] == "PYSEC-2024-1"  # versions only
    assert db.audit(["gratient==0.6", "loguru==0.5.3"]).ok  # withdrawn advisories fail nobody


def test_snapshot_date_is_the_newest_modified_record() -> None:
    date = snapshot_date(load_advisories(ADVISORIES))
    assert date is not None and date.isoformat() == "2024-07-11T17:21:37.216928+00:00"


def test_requirements_that_are_not_exact_pins_are_not_checked() -> None:
    db = load_advisories(ADVISORIES)
    report = db.audit(["idna>=3", "idna", "idna==3.*", "idna @ https://example.org/idna-3.6-py3-none-any.whl",
                       "not a requirement!", "idna==3.6"])
    reasons = {u.requirement: u.reason for u in report.unchecked}
    assert "not pinned to one version (>=3)" in reasons["idna>=3"]
    assert "not pinned to one version (no version)" in reasons["idna"]
    assert "not pinned" in reasons["idna==3.*"]
    assert "direct reference" in reasons["idna @ https://example.org/idna-3.6-py3-none-any.whl"]
    assert "not a valid requirement" in reasons["not a requirement!"]
    assert [f.requirement for f in report.vulnerable] == ["idna==3.6"]
    assert not report.ok and not report.clean


def _record(tmp: Path, name: str, record: dict[str, Any]) -> None:
    (tmp / name).write_text(json.dumps(record), encoding="utf-8")


def test_json_records_with_limit_semver_and_unreadable_ranges(tmp_path: Path) -> None:
    pkg = {"ecosystem": "PyPI", "name": "Demo_Pkg"}
    _record(tmp_path, "A-1.json", {"id": "A-1", "modified": "2024-01-02T03:04:05.123456789Z", "affected": [
        {"package": pkg, "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}, {"limit": "1.5.0"}]}]}]})
    _record(tmp_path, "A-2.json", {"id": "A-2", "modified": "2023-01-01T00:00:00Z", "affected": [
        {"package": pkg, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.0"}, {"fixed": "2019-09-12x"}]}]}]})
    _record(tmp_path, "B-1.json", {"id": "B-1", "modified": "2023-01-01T00:00:00Z", "affected": [
        {"package": {"ecosystem": "npm", "name": "demo-pkg"}, "versions": ["1.2.0"]}]})
    db = load_advisories(tmp_path)
    assert db.records == 2  # the npm record is not read
    assert snapshot_date(db).isoformat() == "2024-01-02T03:04:05.123456+00:00"  # nanoseconds cut
    assert [a["id"] for a in db.audit(["demo-pkg==1.2.0"]).vulnerable[0].advisories] == ["A-1"]
    assert db.audit(["demo.pkg==1.5.0", "demo-pkg==0.9"]).ok
    unchecked = db.audit(["demo-pkg==2.1"]).unchecked  # A-2's range cannot be evaluated: never "clean"
    assert unchecked and "advisory A-2" in unchecked[0].reason and "2019-09-12x" in unchecked[0].reason


def test_zip_of_yaml_and_zip_of_json_give_the_folder_answers(tmp_path: Path) -> None:
    import yaml

    yaml_zip, json_zip = tmp_path / "osv-yaml.zip", tmp_path / "osv-json.zip"
    with zipfile.ZipFile(yaml_zip, "w") as yz, zipfile.ZipFile(json_zip, "w") as jz:
        for path in sorted(ADVISORIES.rglob("*.yaml")):
            yz.write(path, path.relative_to(ADVISORIES).as_posix())
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # noqa: S506 - strings only
            jz.writestr(f"{doc['id']}.json", json.dumps(doc))  # OSV's own export: flat JSON files
        jz.writestr("README.md", "not a record")
    pins = ["idna==3.6", "jinja2==2.10", "py==1.11.0", "gratient==0.5", "pyyaml==6.0.4", "loguru==0.5.3"]
    expected = load_advisories(ADVISORIES).audit(pins).as_dict()
    for archive in (yaml_zip, json_zip):
        db = load_advisories(archive)
        assert db.records == 6 and db.withdrawn == 1
        assert db.audit(pins).as_dict() == expected
        assert snapshot_date(db) == snapshot_date(load_advisories(ADVISORIES))


def test_snapshot_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AdvisoryError, match="does not exist"):
        load_advisories(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(AdvisoryError, match="neither a folder nor a zip"):
        load_advisories(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdvisoryError, match="no .yaml, .yml or .json record files"):
        load_advisories(empty)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("vulns/x/PYSEC-1.yaml", "id: [unclosed\n")
    with pytest.raises(AdvisoryError, match=r"vulns/x/PYSEC-1.yaml: not valid YAML"):
        load_advisories(broken)
    no_id = tmp_path / "noid"
    no_id.mkdir()
    (no_id / "r.json").write_text('{"affected": []}', encoding="utf-8")
    with pytest.raises(AdvisoryError, match="r.json: not an OSV record"):
        load_advisories(no_id)


def test_snapshot_is_cached_until_a_record_changes(tmp_path: Path) -> None:
    folder = tmp_path / "snap"
    shutil.copytree(ADVISORIES, folder)
    first = load_advisories(folder)
    assert load_advisories(folder) is first
    _record(folder, "NEW-1.json", {"id": "NEW-1", "modified": "2025-01-01T00:00:00Z", "affected": [
        {"package": {"ecosystem": "PyPI", "name": "idna"}, "versions": ["3.7"]}]})
    second = load_advisories(folder)
    assert second is not first and not second.audit(["idna==3.7"]).ok


# -- bandit ------------------------------------------------------------------------------------


def test_bandit_names_block_line_and_rule(unsafe: Any, unsafe_export: Path) -> None:
    from pytest_mulm.security.bandit_scan import run_bandit

    report = run_bandit(unsafe_export, unsafe)
    source = unsafe.node("parse").source
    got = {f.rule: f for f in report.failing}
    assert set(got) == {"B602", "B506"}
    assert got["B602"].where == f"node 'parse' (Parse Config), line {_line_of(source, 'shell=True')} of its sourceCode"
    assert got["B506"].where == f"node 'parse' (Parse Config), line {_line_of(source, 'yaml.load(')} of its sourceCode"
    assert got["B602"].node == "parse" and got["B602"].severity == "HIGH"
    text = got["B506"].line_text()
    assert "B506" in text and "src/unsafe_config_parser/blocks/b_parse.py:" in text and "yaml" in text
    assert not report.errors


def test_an_artifact_cannot_configure_its_own_audit(tmp_path: Path, unsafe: Any, unsafe_export: Path) -> None:
    from pytest_mulm.security.bandit_scan import run_bandit

    art = _copy(unsafe_export, tmp_path)
    (art / ".bandit").write_text("[bandit]\nskips: B602,B506\nexclude: ./src\n", encoding="utf-8")
    assert {f.rule for f in run_bandit(art, unsafe).failing} == {"B602", "B506"}


def test_bandit_passes_the_clean_workflow(tmp_path: Path) -> None:
    from pytest_mulm.exporting import export_workflow
    from pytest_mulm.security.bandit_scan import run_bandit

    clean = _load("clean.json")
    report = run_bandit(export_workflow(clean, "python-package", out_dir=tmp_path).path, clean)
    assert report.failing == [] and report.errors == []
    assert report.files > 5


def test_bandit_counts_lines_from_the_blocks_own_source(tmp_path: Path) -> None:
    """Blank lines the exporter strips from the top of a block still count."""
    from pytest_mulm.exporting import export_workflow
    from pytest_mulm.loader import parse_workflow
    from pytest_mulm.security.bandit_scan import run_bandit

    doc = json.loads((WORKFLOWS / "unsafe.json").read_text(encoding="utf-8"))
    doc["nodes"][1]["data"]["sourceCode"] = "\n\n" + doc["nodes"][1]["data"]["sourceCode"]
    wf = parse_workflow(doc)
    report = run_bandit(export_workflow(wf, "python-package", out_dir=tmp_path).path, wf)
    lines = {f.rule: f.where for f in report.failing}
    assert lines["B602"].endswith(f"line {_line_of(wf.node('parse').source, 'shell=True')} of its sourceCode")
    assert _line_of(wf.node("parse").source, "shell=True") == _line_of(_load("unsafe.json").node("parse").source,
                                                                       "shell=True") + 2


def test_bandit_scans_block_code_the_export_does_not_carry(tmp_path: Path, unsafe: Any) -> None:
    (tmp_path / "README.md").write_text("no code here\n", encoding="utf-8")
    from pytest_mulm.security.bandit_scan import run_bandit

    report = run_bandit(tmp_path, unsafe)
    assert {(f.rule, f.file) for f in report.failing} == {
        ("B602", "<sourceCode of node 'parse' (Parse Config)>"), ("B506", "<sourceCode of node 'parse' (Parse Config)>")}
    source = unsafe.node("parse").source
    assert {f.line for f in report.failing} == {_line_of(source, "shell=True"), _line_of(source, "yaml.load(")}


def test_nosec_counts_in_generated_code_only(tmp_path: Path) -> None:
    from pytest_mulm.exporting import export_workflow
    from pytest_mulm.loader import parse_workflow
    from pytest_mulm.security.bandit_scan import run_bandit

    doc = json.loads((WORKFLOWS / "unsafe.json").read_text(encoding="utf-8"))
    doc["nodes"][1]["data"]["sourceCode"] = doc["nodes"][1]["data"]["sourceCode"].replace(
        "check=True).stdout", "check=True).stdout  # nosec")
    wf = parse_workflow(doc)
    art = export_workflow(wf, "python-package", out_dir=tmp_path).path
    (art / "fetch.py").write_text(
        "import urllib.request\n\n\ndef fetch(url):\n"
        "    return urllib.request.urlopen(url).read()  # nosec B310 - the URL is a constant of the template\n",
        encoding="utf-8")
    (art / "fetch2.py").write_text(
        "import urllib.request\n\n\ndef fetch(url):\n    return urllib.request.urlopen(url).read()\n", encoding="utf-8")
    report = run_bandit(art, wf)
    failing = {f.rule: f.file for f in report.failing}
    assert failing["B602"].endswith("blocks/b_parse.py"), "# nosec in a block must not hide the finding"
    assert failing["B310"] == "fetch2.py"
    assert {f.file: f.accepted for f in report.accepted} == {
        "fetch.py": "generated code: nosec B310 - the URL is a constant of the template"}


def test_bandit_reads_notebook_cells(tmp_path: Path) -> None:
    from pytest_mulm.security.bandit_scan import run_bandit

    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": ["%matplotlib inline\n", "import subprocess\n", "cmd = input()\n",
                         "subprocess.call(cmd, shell=True)\n"]}]
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
                                       encoding="utf-8")
    report = run_bandit(tmp_path)
    assert [(f.rule, f.where) for f in report.failing] == [("B602", "nb.ipynb, cell 2, line 4")]


# -- baseline ----------------------------------------------------------------------------------


def _baseline(tmp_path: Path, entries: Any) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_baseline_accepts_with_reason_and_lists_it(tmp_path: Path, unsafe: Any, unsafe_export: Path) -> None:
    from pytest_mulm.security.bandit_scan import run_bandit

    baseline = load_baseline(_baseline(tmp_path, [
        {"rule": "B602", "node": "parse", "reason": "printf of a shlex-quoted value: no injection"},
        {"rule": "B999", "file": "src/*/cli.py", "reason": "stale entry"},
    ]))
    report = run_bandit(unsafe_export, unsafe, baseline)
    assert [f.rule for f in report.failing] == ["B506"]
    assert [(f.rule, f.accepted) for f in report.accepted] == [("B602", "printf of a shlex-quoted value: no injection")]
    summary = report.summary()
    assert summary["accepted"][0]["accepted"] == "printf of a shlex-quoted value: no injection"
    assert summary["unused_baseline"] == ["B999 in file src/*/cli.py"]
    by_file = load_baseline(_baseline(tmp_path, [{"rule": "B506", "file": "src/*/blocks/b_parse.py", "reason": "trusted"}]))
    assert [f.rule for f in run_bandit(unsafe_export, unsafe, by_file).failing] == ["B602"]


@pytest.mark.parametrize(("entries", "message"), [
    ([{"rule": "B602", "node": "parse"}], "needs a written 'reason'"),
    ([{"rule": "B602", "node": "parse", "reason": "   "}], "needs a written 'reason'"),
    ([{"node": "parse", "reason": "x"}], "needs the 'rule'"),
    ([{"rule": "B602", "reason": "x"}], "exactly one of 'node'"),
    ([{"rule": "B602", "node": "a", "file": "b", "reason": "x"}], "exactly one of 'node'"),
    ([{"rule": "B602", "node": "a", "reason": "x", "resaon": "typo"}], "unknown key"),
    ([{"rule": "B602", "node": "a", "reason": "x", "check": "lint"}], "check 'lint'"),
    ({"rule": "B602"}, "must be a JSON list"),
])
def test_baseline_entries_are_validated(tmp_path: Path, entries: Any, message: str) -> None:
    with pytest.raises(BaselineError, match=message):
        load_baseline(_baseline(tmp_path, entries))


def test_baseline_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(BaselineError, match="not valid JSON"):
        load_baseline(path)


# -- secrets -----------------------------------------------------------------------------------


AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"  # split so this file itself does not look like a leak


def test_secrets_scan_reads_untracked_files_and_hides_values(tmp_path: Path, unsafe_export: Path) -> None:
    import subprocess

    from pytest_mulm.security.secrets_scan import known_digests, scan_secrets

    art = _copy(unsafe_export, tmp_path)
    subprocess.run(["git", "init", "-q", str(art)], check=True)  # a repository where nothing is tracked
    (art / "src" / "settings.py").write_text(f'TIMEOUT = 3\nAWS_KEY_ID = "{AWS_KEY}"\n', encoding="utf-8")
    manifest = json.loads((art / "mulm-manifest.json").read_text(encoding="utf-8"))
    report = scan_secrets(art, digests=known_digests(art, [manifest["cache_key"], manifest["workflow"]["content_hash"]]))
    assert [(f.file, f.line, f.type) for f in report.failing] == [("src/settings.py", 2, "AWS Access Key")]
    assert report.ignored_digests >= len(manifest["files"])  # the manifest's sha256 digests are not secrets
    assert AWS_KEY not in json.dumps(report.summary()) and AWS_KEY not in report.failing[0].line_text()


def test_only_real_content_digests_are_ignored(tmp_path: Path) -> None:
    from pytest_mulm.security.secrets_scan import known_digests, scan_secrets

    (tmp_path / "data.bin").write_bytes(b"\0weights")
    real = hashlib.sha256(b"\0weights").hexdigest()
    fake = hashlib.sha256(b"something else entirely").hexdigest()
    (tmp_path / "hashes.json").write_text(json.dumps({"data.bin": real, "other": fake}, indent=1), encoding="utf-8")
    report = scan_secrets(tmp_path, digests=known_digests(tmp_path))
    assert [(f.file, f.line, f.type) for f in report.failing] == [("hashes.json", 3, "Hex High Entropy String")]
    assert report.ignored_digests == 1 and report.binary == ["data.bin"]


def test_secrets_baseline_accepts_a_false_positive(tmp_path: Path) -> None:
    from pytest_mulm.security.secrets_scan import scan_secrets

    art = tmp_path / "art"
    art.mkdir()
    (art / "ids.txt").write_text(f'record = "{hashlib.sha256(b"x").hexdigest()}"\n', encoding="utf-8")
    assert [f.type for f in scan_secrets(art).failing] == ["Hex High Entropy String"]
    baseline = load_baseline(_baseline(tmp_path, [
        {"check": "secrets", "rule": "Hex High Entropy String", "file": "ids.txt", "reason": "public record ids"}]))
    report = scan_secrets(art, baseline=baseline)
    assert report.failing == [] and report.findings[0].accepted == "public record ids"


def test_secret_values_are_found_and_masked(tmp_path: Path) -> None:
    from pytest_mulm.security.secrets_scan import find_leaks, secret_needles

    env = {"OPENAI_API_KEY": "sk-test-0123456789abcdef", "MULM_API_KEYS": "key-one-AAAA, short",
           "MULM_JWT_SECRET": "", "MULM_SECRET_ENV": "MY_TOKEN", "MY_TOKEN": "tok-ZZZZZZZZ"}
    needles, notes = secret_needles(env)
    assert needles == {"OPENAI_API_KEY": "sk-test-0123456789abcdef", "MULM_API_KEYS[0]": "key-one-AAAA",
                       "MY_TOKEN": "tok-ZZZZZZZZ"}
    assert notes == ["MULM_API_KEYS[1] is shorter than 8 characters: not searched"]
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "service.log").write_text("start\nauth ok\nBearer sk-test-0123456789abcdef\n", encoding="utf-8")
    (tmp_path / "report.json").write_text('{"k": "tok-ZZZZZZZZ"}', encoding="utf-8")
    leaks, searched = find_leaks({"logs": tmp_path / "logs", "report": tmp_path / "report.json",
                                  "cassettes": tmp_path / "none"}, needles)
    assert searched == 2
    assert [leak.line_text() for leak in leaks] == [
        "logs: service.log, line 3: the value of OPENAI_API_KEY (24 characters, masked)",
        "report: report.json, line 1: the value of MY_TOKEN (12 characters, masked)",
    ]


# -- online audits -----------------------------------------------------------------------------


@pytest.fixture
def fake_pypi() -> Iterator[str]:
    """A loopback "PyPI JSON API": idna 3.6 answers with vulnerability data, the rest 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/pypi/idna/3.6/json":
                body = json.dumps({"info": {}, "vulnerabilities": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    finally:
        server.shutdown()
        server.server_close()


def test_probe_says_why_pip_audit_cannot_check(fake_pypi: str) -> None:
    from pytest_mulm.security.audit_online import probe_pypi

    assert probe_pypi(["idna==3.6"], base=fake_pypi) is None
    assert "HTTP 404" in probe_pypi(["PyYAML==6.0.4", "idna==3.6"], base=fake_pypi)
    assert "no requirement is pinned" in probe_pypi(["idna>=3"], base=fake_pypi)
    closed = fake_pypi.rsplit(":", 1)[0] + ":9/pypi"
    assert "not reachable" in probe_pypi(["idna==3.6"], base=closed, timeout=1)


def _fake_tool(tmp_path: Path, stdout: str, code: int, stderr: str = "") -> list[str]:
    script = tmp_path / "tool.py"
    script.write_text(f"import sys\nsys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\nsys.exit({code})\n",
                      encoding="utf-8")
    return [sys.executable, str(script)]


def test_pip_audit_report_is_read_and_skips_fail(tmp_path: Path) -> None:
    from pytest_mulm.security.audit_online import run_pip_audit

    out = json.dumps({"dependencies": [
        {"name": "idna", "version": "3.6", "vulns": [
            {"id": "PYSEC-2024-60", "fix_versions": ["3.7"], "aliases": ["CVE-2024-3651"]}]},
        {"name": "pyyaml", "version": "6.0.4", "vulns": []},
        {"name": "private-pkg", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ], "fixes": []})
    audit = run_pip_audit(["idna==3.6"], command=_fake_tool(tmp_path, out, 1))
    assert audit.vulnerable == ["idna==3.6: PYSEC-2024-60 (CVE-2024-3651) fixed in 3.7"]
    assert audit.unchecked == ["private-pkg: could not be checked: Dependency not found on PyPI and could not be audited"]
    assert audit.checked == 2 and not audit.ok
    strict = run_pip_audit(["idna==3.6"], command=_fake_tool(
        tmp_path, "", 1, "ERROR:pip_audit._cli:idna: Dependency not found on PyPI and could not be audited: idna (3.6)\n"))
    assert strict.errors == ["pip-audit failed (exit 1): idna: Dependency not found on PyPI and could not be "
                             "audited: idna (3.6)"]


def test_safety_that_cannot_run_never_passes(tmp_path: Path) -> None:
    from pytest_mulm.security.audit_online import run_safety

    crashed = run_safety(["idna==3.6"], command=_fake_tool(tmp_path, "", 1, "Traceback: offline\n"))
    assert not crashed.ok and "safety could not audit (exit 1): Traceback: offline" in crashed.errors[0]
    found = run_safety(["idna==3.6"], command=_fake_tool(tmp_path, json.dumps({
        "scanned_packages": {"idna": {}}, "vulnerabilities": [
            {"package_name": "idna", "analyzed_version": "3.6", "vulnerability_id": "67895", "CVE": "CVE-2024-3651"}]}), 64))
    assert found.vulnerable == ["idna==3.6: 67895 (CVE-2024-3651)"]


# -- lint --------------------------------------------------------------------------------------


def test_lint_fails_generated_code_and_warns_for_blocks(tmp_path: Path) -> None:
    from pytest_mulm.exporting import export_workflow
    from pytest_mulm.loader import parse_workflow
    from pytest_mulm.security.lint import run_ruff

    doc = json.loads((WORKFLOWS / "clean.json").read_text(encoding="utf-8"))
    doc["nodes"][1]["data"]["sourceCode"] = doc["nodes"][1]["data"]["sourceCode"].replace(
        "    data = yaml.safe_load(text)", "    unused = 1\n    data = yaml.safe_load(text)")
    wf = parse_workflow(doc)
    art = export_workflow(wf, "python-package", out_dir=tmp_path).path
    cli = next(art.rglob("cli.py"))
    text = cli.read_text(encoding="utf-8").rstrip("\n") + "\n\n\ndef _extra():\n    spare = 1\n"
    cli.write_text(text, encoding="utf-8")
    report = run_ruff(art, wf)
    assert [(f.rule, f.line) for f in report.failing if f.file.endswith("cli.py")] == [("F841", text.count("\n"))]
    warning = next(f for f in report.warnings if f.rule == "F841")
    assert warning.node == "parse" and warning.block_code
    line = _line_of(wf.node("parse").source, "unused = 1")
    assert warning.where == f"node 'parse' (Parse Config), line {line} of its sourceCode"
    assert not any(f.node and f.block_code for f in report.failing)


def test_lint_allows_fastapi_dependency_defaults(tmp_path: Path) -> None:
    from pytest_mulm.security.lint import run_ruff

    (tmp_path / "app.py").write_text(
        "from fastapi import Depends, FastAPI\n\napp = FastAPI()\n\n\ndef user():\n    return 'u'\n\n\n"
        "@app.get('/')\ndef root(who: str = Depends(user)):\n    return who\n\n\n"
        "def bad(stamp=time.time()):\n    return stamp\n", encoding="utf-8")
    (tmp_path / "app.py").write_text("import time\n" + (tmp_path / "app.py").read_text(encoding="utf-8"), encoding="utf-8")
    found = run_ruff(tmp_path).failing
    assert [(f.rule, f.line) for f in found] == [("B008", 16)]  # other calls in defaults still are findings


# -- the suite's own messages (small in-process runs; no venv is built) --------------------------


def _props(xml: Path) -> dict[str, dict[str, Any]]:
    """``{test name: its mulm_security summary}`` from a junit XML file."""
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == "mulm_security":
                found[case.get("name", "")] = ast.literal_eval(prop.get("value", "{}"))
    return found


def test_suite_fails_on_an_old_snapshot_and_names_its_date(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(f"--mulm-workflow={WORKFLOWS / 'clean.json'}", "--mulm-format=python-package",
                                f"--mulm-advisories={ADVISORIES}", "--mulm-advisories-max-age=30",
                                "-k", "dependency_audit_offline", "--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, deselected=result.parseoutcomes()["deselected"])
    result.stdout.fnmatch_lines(["*the advisory snapshot is * days old (newest record modified 2024-07-11); "
                                 "the limit is 30 days (--mulm-advisories-max-age)*"])
    summary = _props(pytester.path / "out.xml")["test_dependency_audit_offline[python-package]"]
    assert summary["snapshot_date"].startswith("2024-07-11") and summary["records"] == 6
    assert summary["vulnerable"] == [] and summary["unchecked"] == []


def test_suite_bandit_uses_the_baseline(pytester: pytest.Pytester) -> None:
    args = (f"--mulm-workflow={WORKFLOWS / 'unsafe.json'}", "--mulm-format=python-package", "-k", "bandit",
            "-p", "no:cacheprovider")
    (pytester.path / "no-reason.json").write_text(json.dumps([{"rule": "B602", "node": "parse"}]), encoding="utf-8")
    result = pytester.runpytest(*args, "--mulm-security-baseline=no-reason.json")
    result.stdout.fnmatch_lines(["*entry 1: accepting a finding needs a written 'reason'*"])
    (pytester.path / "ok.json").write_text(json.dumps([
        {"rule": "B602", "node": "parse", "reason": "printf of a shlex-quoted value"},
        {"rule": "B506", "node": "parse", "reason": "the loader reads our own echo"}]), encoding="utf-8")
    result = pytester.runpytest(*args, "--mulm-security-baseline=ok.json", "--junitxml=out.xml")
    result.assert_outcomes(passed=1, deselected=result.parseoutcomes()["deselected"])
    summary = _props(pytester.path / "out.xml")["test_bandit[python-package]"]
    assert sorted((a["rule"], a["accepted"]) for a in summary["accepted"]) == [
        ("B506", "the loader reads our own echo"), ("B602", "printf of a shlex-quoted value")]


def test_suite_finds_a_secret_value_in_the_cassettes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "jwt-secret-for-this-test-only-0123"
    monkeypatch.setenv("MULM_JWT_SECRET", secret)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (pytester.path / "cass").mkdir()
    (pytester.path / "cass" / "leaky.yaml").write_text(f"interactions:\n- token: {secret}\n", encoding="utf-8")
    result = pytester.runpytest(f"--mulm-workflow={WORKFLOWS / 'clean.json'}", "--mulm-format=python-package",
                                "--mulm-cassettes=cass", "--mulm-ai=off", "-k", "leak", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*cassettes: leaky.yaml, line 2: the value of MULM_JWT_SECRET (34 characters, masked)*"])
    assert secret not in result.stdout.str()
    result.assert_outcomes(failed=1, deselected=result.parseoutcomes()["deselected"])


def test_suite_reads_a_zip_snapshot_and_names_the_advisories(pytester: pytest.Pytester) -> None:
    archive = pytester.path / "osv.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(ADVISORIES.rglob("*.yaml")):
            zf.write(path, path.relative_to(ADVISORIES).as_posix())
    result = pytester.runpytest(f"--mulm-workflow={WORKFLOWS / 'unsafe.json'}", "--mulm-format=python-package",
                                "--mulm-advisories=osv.zip", "--mulm-advisories-max-age=100000",
                                "-k", "dependency_audit_offline", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "offline dependency audit of the python-package artifact's 2 pinned requirement(s) against *osv.zip "
        "(snapshot of 2024-07-11, 6 records):",
        "  idna==3.6: PYSEC-2024-60 (CVE-2024-3651) fixed in 3.7; raise idna to 3.7 or later",
    ])
    result.assert_outcomes(failed=1, deselected=result.parseoutcomes()["deselected"])
