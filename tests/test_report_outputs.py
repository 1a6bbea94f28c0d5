"""mulm-report.md, mulm-report.html and verify_deployment, from hand-built report dicts.

The reports here follow the shape ``report.build_report`` writes (design.md §8), plus the
``security``, ``gates`` and ``last_known_good`` keys, which are optional: every renderer
must work with and without them.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_mulm.errors import MulmError
from pytest_mulm.exporting import ExportResult
from pytest_mulm.report_html import MAX_EMBED_BYTES, render_html, write_html
from pytest_mulm.report_md import latency_figures, md, render_markdown, write_markdown
from pytest_mulm.verify import recommendations, verify_deployment

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script> | `rm -rf` \n# owned <img src=x onerror=alert(2)>"


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG, written by hand so the tests need no imaging library."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xcf\x22\x2e" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def check(name: str, fmt: str, outcome: str = "passed", message: str = "") -> dict[str, Any]:
    return {"check": name, "nodeid": f"mulm/{fmt}::{name}[{fmt}]", "outcome": outcome, "duration": 0.01,
            "message": message}


def format_entry(fmt: str, checks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    entry = {"export_dir": f"/tmp/out/{fmt}/k{fmt[:4]}", "content_hash": "ab" * 32, "cache_key": f"k{fmt[:4]}",
             "docs": {"origin": "template"}, "builds": 1, "from_cache": False, "warnings": [], "benchmark": None,
             "attachments": {}, "checks": checks}
    entry.update(extra)
    return entry


def base_report(formats: dict[str, dict[str, Any]], name: str = "Iris MLP classifier") -> dict[str, Any]:
    """A report with the counts computed from the checks, as build_report does."""
    checks = [c for entry in formats.values() for c in entry["checks"]]
    failed = sum(1 for c in checks if c["outcome"] in ("failed", "error"))
    return {
        "schema": 1, "plugin_version": "0.1.0", "created": "2026-12-04T10:00:00+00:00",
        "workflow": {"path": "/w/iris.json", "id": "iris", "name": name, "content_hash": "cd" * 32, "examples": 6,
                     "examples_synthesized": False, "llm_blocks": []},
        "formats": formats,
        "tests_passed": sum(1 for c in checks if c["outcome"] == "passed"), "tests_failed": failed,
        "tests_skipped": sum(1 for c in checks if c["outcome"] == "skipped"), "tests_total": len(checks),
        "exit_status": 1 if failed else 0, "recommendations": [], "llm": None, "sections": [],
    }


@pytest.fixture
def passing() -> dict[str, Any]:
    """Two formats, every check passed, benchmark figures and LLM usage; no gates/security/lkg."""
    report = base_report({
        "python-package": format_entry("python-package", [check("test_install", "python-package"),
                                                          check("test_parity", "python-package")]),
        "fastapi-service": format_entry("fastapi-service", [
            check("test_install", "fastapi-service"), check("test_health", "fastapi-service")],
            benchmark={"p50_ms": 3.5, "p95_ms": 9.6, "bare_median_ms": 1.2, "throughput_rps": 258.0}),
    })
    report["llm"] = {"mode": "replay", "model": "gpt-6-luna", "calls": 10, "paid_calls": 2, "exact_hits": 7,
                     "similar_hits": 1, "fallbacks": 0, "tokens_in": 1200, "tokens_out": 300, "cost_usd": 1.0,
                     "budget_usd": 4.0, "spent_usd": 1.0, "remaining_usd": 3.0, "events": [], "generated_blocks": []}
    return report


@pytest.fixture
def failing(tmp_path: Path) -> dict[str, Any]:
    """A failed parity check, an errored install, a skip, a failed benchmark gate, security
    findings, a last known good with rollback commands and a real PNG screenshot."""
    shot = tmp_path / "screenshot.png"
    shot.write_bytes(tiny_png())
    report = base_report({
        "python-package": format_entry("python-package", [
            check("test_install", "python-package"),
            check("test_parity", "python-package", "failed", "2 of 6 examples disagree: example 3"),
            check("test_docs", "python-package", "skipped", "no LaTeX toolchain")]),
        "huggingface-space": format_entry("huggingface-space", [
            check("test_install", "huggingface-space", "error", "venv creation failed"),
            check("test_screenshot", "huggingface-space")],
            benchmark={"gradio_client_p50_ms": 99.1, "gradio_client_max_ms": 104.4},
            attachments={"screenshot": str(shot), "model card": str(tmp_path / "MODEL_CARD.md")}),
    })
    report["gates"] = {
        "benchmark": {"outcome": "failed", "message": "1 figure slower than the baseline", "comparisons": [
            {"format": "huggingface-space", "figure": "gradio_client_p50_ms", "baseline": 60.0, "current": 99.1,
             "change_percent": 65.17, "threshold_percent": 20, "outcome": "failed"}]},
        "budget": {"outcome": "passed", "message": "$0.00 of $25.00"},
        "security": {"outcome": "failed", "message": "1 unaccepted finding"},
    }
    report["security"] = {"python-package": {"checks": [
        {"check": "bandit", "outcome": "failed", "findings": [
            {"file": "src/iris/blocks.py", "line": 7, "rule": "B307", "message": "use of eval", "node": "clean"}],
         "accepted": [{"file": "src/iris/cli.py", "line": 3, "rule": "B603", "message": "subprocess", "reason": "fixed argv"}]}],
        "api": []}}
    report["last_known_good"] = {"python-package": {
        "key": "0123abcd", "export_dir": "/tmp/out/python-package/0123abcd", "created": "2026-12-01T08:00:00+00:00",
        "rollback": ["pip install --force-reinstall /tmp/out/python-package/0123abcd/dist/iris-0.1.0-py3-none-any.whl"]}}
    report["recommendations"] = recommendations(report)
    return report


@pytest.fixture
def hostile() -> dict[str, Any]:
    """Workflow, check, message, warning and plugin strings that try to inject HTML or Markdown."""
    report = base_report({
        "python-package": format_entry("python-package", [
            check("test_a|b", "python-package", "failed", HOSTILE),
            check("test_`tick`", "python-package", "failed", '" onmouseover="alert(3)'),
            check("test_ok", "python-package")],
            warnings=[HOSTILE], attachments={HOSTILE: "javascript:alert(4)"}),
    }, name=HOSTILE)
    report["sections"] = [{"title": HOSTILE, "lines": [HOSTILE]}]
    report["recommendations"] = [HOSTILE]
    report["last_known_good"] = {"python-package": {"key": "k", "export_dir": "/x", "created": "now",
                                                    "rollback": ["echo ``` && echo done"]}}
    return report


def cells(row: str) -> list[str]:
    """The cells of one GFM table row, splitting on unescaped pipes only (as GitHub does)."""
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def table_after(markdown: str, heading: str) -> list[str]:
    """The table lines that follow ``heading``."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return rows


# ---- Markdown ---------------------------------------------------------------------------


def test_markdown_title_says_verdict_and_counts(passing: dict[str, Any], failing: dict[str, Any]) -> None:
    ok, bad = render_markdown(passing), render_markdown(failing)
    assert ok.startswith("## ✅ µLM verification: Iris MLP classifier\n")
    assert "**PASSED**: 4/4 tests passed, 0 failed, 0 skipped; exit status 0" in ok
    assert bad.startswith("## ❌ ")
    assert "**FAILED**: 2/5 tests passed, 2 failed, 1 skipped; exit status 1" in bad


def test_a_failed_gate_fails_the_verdict_even_with_every_test_passed(passing: dict[str, Any]) -> None:
    passing["gates"] = {"budget": {"outcome": "failed", "message": "over budget"}}
    assert render_markdown(passing).startswith("## ❌ ")


def test_markdown_check_table_has_one_row_per_check_and_one_column_per_format(failing: dict[str, Any]) -> None:
    table = table_after(render_markdown(failing), "### Checks")
    assert cells(table[0]) == [" check ", " python-package ", " huggingface-space "]
    assert [cells(row)[0].strip() for row in table[2:]] == ["test_install", "test_parity", "test_docs", "test_screenshot"]
    assert all(len(cells(row)) == 3 for row in table)
    assert [c.strip() for c in cells(table[2])] == ["test_install", "ok", "**ERROR**"]
    assert [c.strip() for c in cells(table[3])] == ["test_parity", "**FAIL**", "–"]
    assert [c.strip() for c in cells(table[4])] == ["test_docs", "skip", "–"]


def test_markdown_lists_failures_gates_security_and_rollback(failing: dict[str, Any]) -> None:
    text = render_markdown(failing)
    assert "- **python-package** test_parity (failed): 2 of 6 examples disagree: example 3" in text
    assert "- **huggingface-space** test_install (error): venv creation failed" in text
    gates = table_after(text, "### Gates")
    assert [c.strip() for c in cells(gates[2])[:2]] == ["benchmark", "❌ failed"]
    assert "compared with the stored baseline" in gates[2]  # the explanation column
    assert "| huggingface-space | gradio_client_p50_ms | 60.0 | 99.1 | +65.2% | +20.0% | ❌ failed |" in text
    assert "node 'clean' src/iris/blocks.py:7 B307 use of eval" in text
    assert "```sh\npip install --force-reinstall /tmp/out/python-package/0123abcd/dist/iris-0.1.0-py3-none-any.whl\n```" in text
    assert "- **huggingface-space** screenshot: " in text


def test_markdown_without_optional_keys_says_so(passing: dict[str, Any]) -> None:
    passing["llm"] = None
    text = render_markdown(passing)
    assert "No LLM call in this run." in text
    for heading in ("### Gates", "### Security", "### Last known good"):
        assert heading not in text
    assert "| fastapi-service | p50_ms | 3.5 |" in text


def test_markdown_llm_line_has_hits_paid_calls_and_dollars(passing: dict[str, Any]) -> None:
    text = render_markdown(passing)
    assert ("10 call(s) (replay, model gpt-6-luna): 7 exact and 1 similar cache hit(s), 2 paid, "
            "0 template fallback(s); 1200 tokens in, 300 out; \\$1.00 spent of \\$4.00, \\$3.00 left") in text


def test_markdown_escapes_hostile_strings(hostile: dict[str, Any]) -> None:
    text = render_markdown(hostile)
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # the newline in the name must not start a heading of its own
    assert not any(line.startswith("# owned") for line in text.splitlines())
    # every backtick outside the rollback fence is escaped, so no code span can open
    outside = text.split("````sh")[0]
    assert re.search(r"(?<!\\)`", outside) is None
    table = table_after(text, "### Checks")
    assert all(len(cells(row)) == 2 for row in table), table


def test_markdown_fence_outlasts_backticks_in_a_command(hostile: dict[str, Any]) -> None:
    text = render_markdown(hostile)
    # a three-backtick run inside the command needs a four-backtick fence
    assert "````sh\necho ``` && echo done\n````" in text


@pytest.mark.parametrize(("raw", "escaped"), [
    ("a|b", "a\\|b"), ("<b>", "&lt;b&gt;"), ("`x`", "\\`x\\`"), ("one\ntwo", "one two"), ("- item", "\\- item"),
    ("1. first", "1\\. first"), ("# h", "\\# h"), ("[x](javascript:y)", "\\[x\\](javascript:y)"), ("$x$", "\\$x\\$"),
    ("test_install", "test_install"), ("_em_", "\\_em\\_"), ("0.1.0", "0.1.0"), ("&lt;", "&amp;lt;"),
])
def test_md_escapes_what_markdown_would_interpret(raw: str, escaped: str) -> None:
    assert md(raw) == escaped


def test_write_markdown_writes_the_file_atomically(passing: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    path = write_markdown(passing, tmp_path / "out")
    assert path == tmp_path / "out" / "mulm-report.md"
    assert path.read_text(encoding="utf-8") == render_markdown(passing)
    assert [p.name for p in path.parent.iterdir()] == ["mulm-report.md"]  # no temporary file left


def test_write_markdown_appends_to_the_github_step_summary(passing: dict[str, Any], failing: dict[str, Any],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "step-summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_markdown(passing, tmp_path / "a")
    write_markdown(failing, tmp_path / "b")
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n")
    assert text.index(render_markdown(passing)) < text.index(render_markdown(failing))


# ---- HTML -------------------------------------------------------------------------------


class Elements(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


@pytest.mark.parametrize("name", ["passing", "failing", "hostile"])
def test_html_loads_nothing_from_anywhere(name: str, request: pytest.FixtureRequest) -> None:
    html = render_html(request.getfixturevalue(name))
    lowered = html.lower()
    for forbidden in ('src="http', "src='http", 'href="http', "href='http", "url(", "<script", "@import"):
        assert forbidden not in lowered, forbidden
    tags = Elements(html).tags
    assert not {tag for tag, _ in tags} & {"script", "link", "iframe", "object", "embed", "base", "form"}
    for tag, attrs in tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no event handler
        for attr in ("src", "href"):  # only inline data and local files
            assert attrs.get(attr, "file://").startswith(("data:image/", "file://")), (tag, attrs)
    if name != "hostile":  # the hostile strings are shown, escaped, as text
        assert "http://" not in lowered and "https://" not in lowered
    assert "content-security-policy" in lowered and "default-src 'none'" in html


@pytest.mark.parametrize("name", ["passing", "failing", "hostile"])
def test_html_has_three_svg_charts(name: str, request: pytest.FixtureRequest) -> None:
    assert render_html(request.getfixturevalue(name)).count("<svg") == 3


def test_html_verdict_and_coloured_check_table(passing: dict[str, Any], failing: dict[str, Any]) -> None:
    ok, bad = render_html(passing), render_html(failing)
    assert '<header class="verdict ok">' in ok and "PASSED: 4/4 tests passed" in ok
    assert '<header class="verdict bad">' in bad and "FAILED: 2/5 tests passed, 2 failed, 1 skipped" in bad
    assert '<td class="cell c-failed" title="2 of 6 examples disagree: example 3">FAIL</td>' in bad
    assert '<td class="cell c-error" title="venv creation failed">ERROR</td>' in bad
    assert '<td class="cell c-skipped" title="no LaTeX toolchain">skip</td>' in bad


def test_html_escapes_hostile_strings(hostile: dict[str, Any]) -> None:
    html = render_html(hostile)
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'title="&#34; onmouseover=&#34;alert(3)"' in html  # cannot leave the attribute
    # a javascript: attachment "path" becomes a file link, never a script URL
    assert 'href="javascript' not in html
    assert re.search(r'href="file://[^"]*/javascript%3Aalert%284%29"', html)


def test_html_embeds_a_png_screenshot_as_a_data_uri(failing: dict[str, Any]) -> None:
    shot = Path(failing["formats"]["huggingface-space"]["attachments"]["screenshot"])
    html = render_html(failing)
    encoded = base64.b64encode(shot.read_bytes()).decode("ascii")
    assert f'<img src="data:image/png;base64,{encoded}" alt="huggingface-space screenshot">' in html
    # the missing model card stays a file link
    assert f'<a href="{(shot.parent / "MODEL_CARD.md").as_uri()}">' in html


def test_html_links_a_screenshot_too_large_to_embed(failing: dict[str, Any]) -> None:
    shot = Path(failing["formats"]["huggingface-space"]["attachments"]["screenshot"])
    shot.write_bytes(tiny_png() + b"\0" * MAX_EMBED_BYTES)
    html = render_html(failing)
    assert "data:image/png" not in html
    assert f'<a href="{shot.as_uri()}">' in html


def test_html_charts_show_medians_baseline_and_budget(passing: dict[str, Any], failing: dict[str, Any]) -> None:
    assert latency_figures(passing) == [("fastapi-service", "p50_ms", 3.5), ("fastapi-service", "bare_median_ms", 1.2)]
    ok = render_html(passing)
    assert "fastapi-service · p50_ms" in ok and "fastapi-service · bare_median_ms" in ok and "p95_ms</text>" not in ok
    assert "no baseline yet" in ok  # no gates key at all
    assert ">25%</text>" in ok  # 1.00 of 4.00 spent
    assert "10 call(s), how they were answered" in ok
    bad = render_html(failing)
    assert "no baseline yet" not in bad
    assert "huggingface-space · gradio_client_p50_ms (+65.2%, limit +20%)" in bad
    assert "no LLM calls in this run" in bad


def test_html_shows_gates_security_recommendations_and_rollback(failing: dict[str, Any]) -> None:
    html = render_html(failing)
    assert '<td class="cell c-failed">failed</td><td class="wrap">1 figure slower than the baseline</td>' in html
    assert "node &#39;clean&#39; src/iris/blocks.py:7 B307 use of eval" in html
    assert "<summary>1 accepted</summary>" in html
    assert "<li>huggingface-space gradio_client_p50_ms is 65.2% slower than the baseline (threshold 20%)</li>" in html
    assert "<pre><code>pip install --force-reinstall /tmp/out/python-package/0123abcd/dist/" in html


def test_html_renders_a_report_with_almost_nothing_in_it() -> None:
    html = render_html({"formats": {}, "exit_status": 5})
    assert "No check ran." in html and "FAILED" in html and html.count("<svg") == 3


def test_write_html_writes_the_file_atomically(passing: dict[str, Any], tmp_path: Path) -> None:
    path = write_html(passing, tmp_path)
    assert path == tmp_path / "mulm-report.html"
    assert path.read_text(encoding="utf-8") == render_html(passing)
    assert [p.name for p in tmp_path.iterdir()] == ["mulm-report.html"]


def test_html_renders_in_headless_chromium(failing: dict[str, Any], hostile: dict[str, Any], tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium), so the page is not rendered")
    # one page with failures, charts, an embedded screenshot and the hostile strings
    report = copy.deepcopy(failing)
    report["workflow"]["name"] = "Iris " + HOSTILE
    report["formats"]["python-package"]["warnings"] = [HOSTILE]
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    shot = tmp_path / "report.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                   capture_output=True, timeout=180, check=False)
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180,
                         check=False).stdout
    assert "FAILED: 2/5 tests passed" in dom
    assert "<svg" in dom and "no LLM calls in this run" in dom
    # the browser parsed the hostile strings as text: no script or img element came of them
    assert "<script" not in dom and "<img src=\"x\"" not in dom and "&lt;script&gt;" in dom
    assert shot.is_file(), "Chromium wrote no screenshot"
    assert shot.read_bytes()[:8] == PNG_SIGNATURE


# ---- recommendations ------------------------------------------------------------------


def with_security(report: dict[str, Any], fmt: str, *checks: dict[str, Any], api: list[Any] | None = None) -> dict[str, Any]:
    report["security"] = {fmt: {"checks": list(checks), "api": api or []}}
    return report


def test_no_recommendations_for_a_clean_run(passing: dict[str, Any]) -> None:
    assert recommendations(passing) == []


def test_recommend_enabling_auth(passing: dict[str, Any]) -> None:
    passing["formats"]["fastapi-service"]["warnings"] = [
        "authentication is DISABLED (deploymentConfig.authentication.type = none): anyone who reaches the service can call it"]
    assert recommendations(passing) == ["fastapi-service: enable auth (deploymentConfig.authentication.type is 'none')"]


@pytest.mark.parametrize(("finding", "expected"), [
    ({"package": "jinja2", "version": "2.10", "ids": ["PYSEC-2021-66", "CVE-2020-28493"], "fixed": ["2.11.3"]},
     "raise jinja2 to 2.11.3 or later: PYSEC-2021-66 (CVE-2020-28493)"),
    # several fixed releases (one per branch): the lowest above the installed one
    ({"package": "idna", "version": "3.6", "ids": ["PYSEC-2024-60"], "fixed": ["2.10.1", "3.7", "3.9"]},
     "raise idna to 3.7 or later: PYSEC-2024-60"),
    ({"package": "oldlib", "version": "1.0", "ids": ["GHSA-xxxx"], "fixed": []},
     "replace or remove oldlib 1.0: no release fixes GHSA-xxxx"),
    # the audit's own record shape
    ({"requirement": "idna==3.6", "name": "idna", "version": "3.6", "fix": "3.7",
      "advisories": [{"id": "PYSEC-2024-60", "aliases": ["CVE-2024-3651"], "fixed": "3.7", "summary": ""}]},
     "raise idna to 3.7 or later: PYSEC-2024-60 (CVE-2024-3651)"),
])
def test_recommend_raising_a_vulnerable_dependency(passing: dict[str, Any], finding: dict[str, Any], expected: str) -> None:
    report = with_security(passing, "python-package",
                           {"check": "dependencies", "outcome": "failed", "findings": [finding], "accepted": []})
    assert recommendations(report) == [expected]


def test_recommend_fixing_or_accepting_bandit_findings(passing: dict[str, Any]) -> None:
    report = with_security(passing, "python-package", {"check": "bandit", "outcome": "failed", "accepted": [], "findings": [
        {"file": "<sourceCode of node 'x'>", "line": 4, "rule": "B307", "text": "Use of possibly insecure function", "node": "x"},
        {"file": "src/pkg/app.py", "line": 12, "rule": "B602", "message": "shell=True"}]})
    assert recommendations(report) == [
        "node 'x' line 4: B307 Use of possibly insecure function — fix or accept in the security baseline with a reason",
        "python-package: src/pkg/app.py line 12: B602 shell=True — fix or accept in the security baseline with a reason",
    ]


def test_recommend_removing_a_secret(passing: dict[str, Any]) -> None:
    report = with_security(passing, "fastapi-service", {"check": "secrets", "outcome": "failed", "accepted": [], "findings": [
        {"file": "service/config.py", "line": 9, "rule": "AWS Access Key", "message": "looks like a key"}]})
    assert recommendations(report) == ["remove the secret from service/config.py:9"]


def test_recommend_fixing_failed_and_errored_checks(failing: dict[str, Any]) -> None:
    recs = recommendations(failing)
    assert recs[:2] == ["python-package: test_parity failed: 2 of 6 examples disagree: example 3",
                        "huggingface-space: test_install errored: venv creation failed"]


def test_recommend_looking_at_a_benchmark_regression(failing: dict[str, Any]) -> None:
    failing["gates"]["benchmark"]["comparisons"].append(
        {"format": "fastapi-service", "figure": "throughput_rps", "baseline": 250.0, "current": 150.0,
         "change_percent": -40.0, "threshold_percent": 20, "outcome": "failed"})
    recs = recommendations(failing)
    assert "huggingface-space gradio_client_p50_ms is 65.2% slower than the baseline (threshold 20%)" in recs
    assert "fastapi-service throughput_rps is 40% lower than the baseline (threshold 20%)" in recs


def test_recommend_raising_the_budget(passing: dict[str, Any]) -> None:
    passing["gates"] = {"budget": {"outcome": "failed", "message": "over", "spent_usd": 4.2, "budget_usd": 4.0}}
    assert recommendations(passing) == ["raise --mulm-budget (spent $4.20 of $4.00)"]
    # no gate, but the ledger says nothing is left: paid calls were refused
    del passing["gates"]
    passing["llm"].update(spent_usd=4.0, remaining_usd=0.0)
    assert recommendations(passing) == ["raise --mulm-budget (spent $4.00 of $4.00)"]


@pytest.mark.parametrize(("message", "expected"), [
    ("no advisory database: give --mulm-advisories=PATH", "give --mulm-advisories=PATH to audit dependencies offline"),
    ("schemathesis is not installed: pip install 'pytest-mulm[api]'",
     "pip install 'pytest-mulm[api]' so test_x runs instead of being skipped"),
])
def test_recommend_what_lets_a_skipped_check_run(passing: dict[str, Any], message: str, expected: str) -> None:
    passing["formats"]["python-package"]["checks"].append(check("test_x", "python-package", "skipped", message))
    assert recommendations(passing) == [expected]


def test_recommend_fixing_a_failed_api_check_once(passing: dict[str, Any]) -> None:
    report = with_security(passing, "fastapi-service", api=[
        {"check": "error-leak", "outcome": "failed", "message": "a traceback in the 500 body"},
        {"check": "rate-limit", "outcome": "passed"}])
    report["security"]["python-package"] = copy.deepcopy(report["security"]["fastapi-service"])
    assert recommendations(report) == ["fastapi-service: API check error-leak failed: a traceback in the 500 body",
                                       "python-package: API check error-leak failed: a traceback in the 500 body"]


# ---- verify_deployment ------------------------------------------------------------------


def export_of(out: Path, fmt: str, key: str) -> ExportResult:
    return ExportResult(format=fmt, path=out / fmt / key, key=key, from_cache=False, seconds=0.0)


def test_verify_deployment_reads_the_report_next_to_the_export(failing: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mulm-report.json").write_text(json.dumps(failing), encoding="utf-8")
    result = verify_deployment(export_of(out, "python-package", "kpyth"))
    assert result.format == "python-package"
    assert result.passed is False
    assert (result.tests_passed, result.tests_total) == (1, 3)
    assert result.failures == ["test_parity: 2 of 6 examples disagree: example 3",
                               "security bandit: 1 finding(s)"]
    # this format's steps and the run-wide ones, not huggingface-space's
    assert result.recommendations == [
        "python-package: test_parity failed: 2 of 6 examples disagree: example 3",
        "node 'clean' line 7: B307 use of eval — fix or accept in the security baseline with a reason",
    ]
    assert result.report_path == out / "mulm-report.json"


def test_verify_deployment_counts_a_benchmark_regression_as_a_failure(failing: dict[str, Any], tmp_path: Path) -> None:
    result = verify_deployment(export_of(tmp_path, "huggingface-space", "khugg"), report=failing)
    assert result.passed is False and result.report_path is None
    assert result.failures == ["test_install: venv creation failed",
                               "benchmark gate: gradio_client_p50_ms changed 65.2% (threshold 20%)"]


def test_verify_deployment_passes_a_verified_export(passing: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(passing), encoding="utf-8")
    result = verify_deployment(export_of(tmp_path, "fastapi-service", "kfast"), report=str(path))
    assert (result.passed, result.tests_passed, result.tests_total, result.failures) == (True, 2, 2, [])
    assert result.report_path == path


def test_verify_deployment_refuses_a_report_about_another_build(passing: dict[str, Any], tmp_path: Path) -> None:
    result = verify_deployment(export_of(tmp_path, "fastapi-service", "other"), report=passing)
    assert result.passed is False
    assert result.failures[0].startswith("report: it verified fastapi-service export kfast, not other")


def test_verify_deployment_without_a_report_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(MulmError, match=r"no verification report at .*mulm-report.json: "
                                        r"run pytest --mulm-workflow=\.\.\. --mulm-format=python-package first"):
        verify_deployment(export_of(tmp_path, "python-package", "abc"))


def test_verify_deployment_of_a_format_the_run_did_not_cover(passing: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(MulmError, match=r"has no edge-deployment results \(formats: python-package, fastapi-service\)"):
        verify_deployment(export_of(tmp_path, "edge-deployment", "abc"), report=passing)


def test_verify_deployment_of_an_unreadable_report(tmp_path: Path) -> None:
    (tmp_path / "mulm-report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(MulmError, match="cannot be read"):
        verify_deployment(export_of(tmp_path, "python-package", "abc"), report=tmp_path)


# ---- the shapes pytest_mulm.gates and the security suite record ---------------------------


def test_benchmark_rows_recorded_as_gate_details(passing: dict[str, Any]) -> None:
    # GateResult.as_dict() names the rows "details" and says which way each figure regresses
    passing["gates"] = {"benchmark": {"name": "benchmark", "outcome": "failed", "message": "1 figure regressed", "details": [
        {"format": "fastapi-service", "figure": "p50_ms", "baseline": 2.0, "current": 3.0, "change_percent": 50.0,
         "threshold_percent": 20.0, "direction": "lower", "outcome": "failed", "reason": "slower or bigger by 50.0 %"},
        {"format": "python-package", "figure": "wheel_bytes", "baseline": 1000, "current": 1500, "change_percent": 50.0,
         "threshold_percent": 20.0, "direction": "lower", "outcome": "failed", "reason": ""},
        {"format": "fastapi-service", "figure": "gpu_count", "baseline": None, "current": 1, "change_percent": None,
         "threshold_percent": 20.0, "direction": None, "outcome": "not compared", "reason": "missing in the baseline"}]}}
    assert recommendations(passing) == [
        "fastapi-service p50_ms is 50% slower than the baseline (threshold 20%)",
        "python-package wheel_bytes is 50% larger than the baseline (threshold 20%)"]
    html = render_html(passing)
    assert "no baseline yet" not in html and "fastapi-service · p50_ms (+50.0%, limit +20%)" in html
    assert "gpu_count" not in html.split('<section id="charts">')[1].split("</section>")[0]  # nothing to draw
    assert "| fastapi-service | gpu_count | – | 1 | – | +20.0% | not compared (missing in the baseline) |" in render_markdown(passing)


def test_budget_amounts_recorded_as_gate_details(passing: dict[str, Any]) -> None:
    passing["gates"] = {"budget": {"name": "budget", "outcome": "failed", "message": "over",
                                   "details": [{"spent_usd": 5.5, "budget_usd": 5.0}]}}
    assert recommendations(passing) == ["raise --mulm-budget (spent $5.50 of $5.00)"]


def test_recommendations_from_audit_records(passing: dict[str, Any]) -> None:
    report = with_security(
        passing, "python-package",
        {"check": "dependency-audit-offline", "outcome": "failed", "unchecked": [
            {"requirement": "torch>=2", "reason": "not pinned to one version"}], "vulnerable": [
            {"requirement": "idna==3.6", "name": "idna", "version": "3.6", "fix": "3.7", "advisories": [
                {"id": "PYSEC-2024-60", "aliases": ["CVE-2024-3651"], "fixed": "3.7", "summary": ""},
                {"id": "GHSA-jjg7-2v4v-x38h", "aliases": [], "fixed": "3.7", "summary": ""}]}]},
        {"check": "pip-audit", "outcome": "failed", "findings": ["urllib3==1.26.0: PYSEC-2021-108"]},
        {"check": "secrets", "outcome": "failed", "findings": [{"file": "app.py", "line": 3, "type": "Secret Keyword"}]},
    )
    assert recommendations(report) == [
        "raise idna to 3.7 or later: PYSEC-2024-60 (CVE-2024-3651), GHSA-jjg7-2v4v-x38h",
        "python-package: torch>=2 could not be audited: not pinned to one version",
        "python-package: pip-audit: urllib3==1.26.0: PYSEC-2021-108",
        "remove the secret from app.py:3",
    ]
    text = render_markdown(report)
    assert "idna 3.6: PYSEC-2024-60 (CVE-2024-3651), GHSA-jjg7-2v4v-x38h; fixed in 3.7" in text
    assert "torch&gt;=2: not audited: not pinned to one version" in text
    assert "app.py:3 Secret Keyword" in text


def test_scanner_records_without_an_outcome(passing: dict[str, Any], tmp_path: Path) -> None:
    # the security suite records each scanner's summary as is: outcome is read off it
    report = with_security(
        passing, "fastapi-service",
        {"check": "bandit", "threshold": "severity and confidence >= MEDIUM", "files": 12, "accepted": [],
         "findings": [{"rule": "B602", "name": "subprocess_popen_with_shell_equals_true", "severity": "HIGH",
                       "confidence": "HIGH", "text": "shell=True", "file": "src/app.py", "line": 5, "node": None,
                       "where": "src/app.py, line 5", "accepted": None}]},
        {"check": "pip-audit", "format": "fastapi-service", "skipped": "PyPI is unreachable"},
        {"check": "secrets", "tool": "detect-secrets", "files": 12, "findings": [], "accepted": []},
    )
    table = table_after(render_markdown(report), "### Security")
    assert [[c.strip() for c in cells(row)][1:4] for row in table[2:]] == [
        ["bandit", "**FAIL**", "1"], ["pip-audit", "skip", "0"], ["secrets", "ok", "0"]]
    result = verify_deployment(export_of(tmp_path, "fastapi-service", "kfast"), report=report)
    assert result.passed is False and result.failures == ["security bandit: 1 finding(s)"]
    assert result.recommendations == [
        "fastapi-service: src/app.py, line 5: B602 shell=True — fix or accept in the security baseline with a reason"]
    assert "<td class=\"cell c-skipped\">skipped</td>" in render_html(report)
