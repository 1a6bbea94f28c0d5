"""The ``mulm`` command line and the pytest option errors (design.md §1 and §10).

Bad input is one line naming what is wrong and where (``mulm: error: ...``, exit 2; in
pytest a ``UsageError``, exit 4), never a traceback; export folders are never clobbered.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "examples" / "iris-mlp.json"
RAG = Path("/work/shared/mulm-original/document-qa-rag.json")
MULM = Path(sys.executable).parent / "mulm"
FORMATS = ["python-package"]


def mulm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(MULM), *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False, timeout=300)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- malformed workflows -----------------------------------------------------------------------


def _node(nid, type_, config=None, **data):
    return {"id": nid, "type": "aiBlock", "position": {"x": 0, "y": 0},
            "data": {"label": nid, "type": type_, "config": config or {}, **data}}


def _good() -> dict:
    return {
        "id": "ok", "name": "ok", "version": "1.0.0",
        "nodes": [
            _node("in", "input", {"inputType": "tensor", "shape": [2], "examples": [[1.0, 2.0]]}),
            _node("dense", "dense", {"units": 2, "weights": {"kernel": [[1, 0], [0, 1]], "bias": [0, 0]}}),
            _node("sm", "softmax"),
            _node("out", "output", {"labels": ["a", "b"]}),
        ],
        "edges": [
            {"id": "e1", "source": "in", "target": "dense"},
            {"id": "e2", "source": "dense", "target": "sm"},
            {"id": "e3", "source": "sm", "target": "out"},
        ],
    }


def _with(mutate) -> dict:
    doc = copy.deepcopy(_good())
    mutate(doc)
    return doc


def _cycle(doc):
    doc["edges"].append({"id": "back", "source": "sm", "target": "dense"})


def _unknown_type(doc):
    doc["nodes"][2]["data"]["type"] = "quantum-teleporter"


def _dangling(doc):
    doc["edges"].append({"id": "loose", "source": "sm", "target": "nowhere"})


def _duplicate(doc):
    doc["nodes"].append(_node("sm", "softmax"))


def _bad_source(doc):
    doc["nodes"].insert(1, _node("py", "python", sourceCode="def f(x):\n    return x +\n"))
    doc["edges"][0] = {"id": "e1", "source": "in", "target": "py"}
    doc["edges"].append({"id": "e0", "source": "py", "target": "dense"})


def _bad_shapes(doc):
    doc["nodes"][1]["data"]["config"]["weights"]["kernel"] = [[1, 0], [0, 1], [1, 1]]


# name: (file content, text that must appear in the one error line)
MALFORMED = {
    "not-json": ("{ this is not json", "not valid JSON"),
    "empty-file": ("", "not valid JSON"),
    "top-level-list": ("[1, 2, 3]", "expected an object"),
    "cycle": (_with(_cycle), "cycle"),
    "unknown-block-type": (_with(_unknown_type), "node 'sm'"),
    "dangling-edge": (_with(_dangling), "edge 'loose'"),
    "duplicate-id": (_with(_duplicate), "node 'sm'"),
    "source-does-not-parse": (_with(_bad_source), "node 'py'"),
    "weights-do-not-chain": (_with(_bad_shapes), "node 'dense'"),
}


def write_malformed(tmp_path: Path, name: str) -> Path:
    content, _ = MALFORMED[name]
    path = tmp_path / f"{name}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.fixture
def good_wf(tmp_path) -> Path:
    path = tmp_path / "good.json"
    path.write_text(json.dumps(_good()), encoding="utf-8")
    return path


# -- mulm export ---------------------------------------------------------------------------------


def test_export_iris_prints_the_output_path(tmp_path):
    out = tmp_path / "iris-out"
    proc = mulm("export", IRIS, "--format", "python-package", "-o", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    line, prose = proc.stdout.splitlines()
    assert line.startswith("python-package: ") and str(out) in line
    assert prose.startswith("prose: Descriptions written from pytest-mulm's templates")  # no cassette in tmp_path
    assert (out / "mulm-manifest.json").is_file()
    assert (out / "pyproject.toml").is_file()
    manifest = json.loads((out / "mulm-manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "python-package" and manifest["workflow"]["id"] == "iris-mlp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris-out"], "nothing written next to the output"


def test_export_relative_output_is_under_cwd(tmp_path):
    proc = mulm("export", IRIS, "-f", "python-package", "-o", "rel/out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rel" / "out" / "mulm-manifest.json").is_file()
    assert "rel/out" in proc.stdout


@pytest.mark.parametrize("name", list(MALFORMED))
def test_export_malformed_is_one_error_line(tmp_path, name):
    wf = write_malformed(tmp_path, name)
    out = tmp_path / "out"
    proc = mulm("export", wf, "--format", "python-package", "-o", out)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mulm: error: "), lines[0]
    assert MALFORMED[name][1] in lines[0], lines[0]
    assert proc.stdout == ""
    assert not out.exists(), "nothing is written for a bad workflow"


def _cycle_at_end(doc):
    # out -> sm closes sm -> out -> sm; nothing is downstream of the cycle
    doc["nodes"][3]["data"]["config"] = {}
    doc["edges"].append({"id": "back", "source": "out", "target": "sm"})


@pytest.mark.parametrize("mutate,cycle", [
    pytest.param(_cycle_at_end, r"sm -> out -> sm|out -> sm -> out", id="nothing-downstream"),
    pytest.param(_cycle, r"dense -> sm -> dense|sm -> dense -> sm", id="node-downstream"),
])
def test_cycle_error_shows_the_path(tmp_path, mutate, cycle):
    wf = tmp_path / "cycle.json"
    wf.write_text(json.dumps(_with(mutate)), encoding="utf-8")
    proc = mulm("export", wf, "-f", "python-package", "-o", tmp_path / "o")
    assert proc.returncode == 2
    assert re.search(cycle, proc.stderr), proc.stderr


def test_unknown_block_type_lists_known_types(tmp_path):
    proc = mulm("export", write_malformed(tmp_path, "unknown-block-type"), "-f", "python-package", "-o", tmp_path / "o")
    assert "quantum-teleporter" in proc.stderr
    for known in ("dense", "softmax", "llm", "input", "output"):
        assert known in proc.stderr


def test_missing_workflow_file(tmp_path):
    proc = mulm("export", tmp_path / "nope.json", "-f", "python-package", "-o", tmp_path / "o")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ") and "nope.json" in line


def test_unknown_format_lists_available(good_wf, tmp_path):
    proc = mulm("export", good_wf, "--format", "pdf-report", "-o", tmp_path / "o")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ") and "pdf-report" in line
    for fmt in FORMATS:
        assert fmt in line
    assert not (tmp_path / "o").exists()


def test_unusable_blocks_refuse_export_one_line_each(tmp_path):
    proc = mulm("export", RAG, "-f", "python-package", "-o", tmp_path / "o")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert all(line.startswith("mulm: error: ") for line in lines)
    assert "cannot export" in lines[0]
    for nid in ("doc-input", "embeddings", "vector-store"):
        assert sum(f"'{nid}'" in line for line in lines[1:]) == 1, (nid, lines)
    assert not (tmp_path / "o").exists()


def test_export_refuses_non_empty_folder(good_wf, tmp_path):
    target = tmp_path / "mine"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("precious\n", encoding="utf-8")
    (target / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(target)
    proc = mulm("export", good_wf, "-f", "python-package", "-o", target)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ") and "not an earlier export" in line and str(target) in line
    assert snapshot(target) == before, "the folder's files must be untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.json", "mine"], "no temporary folder left behind"


def test_export_refuses_a_file_as_output(good_wf, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep", encoding="utf-8")
    proc = mulm("export", good_wf, "-f", "python-package", "-o", target)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ")
    assert target.read_text(encoding="utf-8") == "keep"


def test_export_into_empty_folder(good_wf, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    proc = mulm("export", good_wf, "-f", "python-package", "-o", target)
    assert proc.returncode == 0, proc.stderr
    assert (target / "mulm-manifest.json").is_file()


def test_reexport_into_earlier_export(good_wf, tmp_path):
    target = tmp_path / "out"
    first = mulm("export", good_wf, "-f", "python-package", "-o", target)
    assert first.returncode == 0, first.stderr
    manifest1 = json.loads((target / "mulm-manifest.json").read_text(encoding="utf-8"))
    # the workflow changes: the re-export replaces the earlier one
    doc = _good()
    doc["version"] = "2.0.0"
    good_wf.write_text(json.dumps(doc), encoding="utf-8")
    second = mulm("export", good_wf, "-f", "python-package", "-o", target)
    assert second.returncode == 0, second.stderr
    manifest2 = json.loads((target / "mulm-manifest.json").read_text(encoding="utf-8"))
    assert manifest2["workflow"]["version"] == "2.0.0"
    assert manifest2["workflow"]["content_hash"] != manifest1["workflow"]["content_hash"]
    files = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert files - {"mulm-manifest.json"} == set(manifest2["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.json", "out"], "no .tmp-/.old- folder left behind"


def test_failed_reexport_keeps_the_earlier_export(good_wf, tmp_path):
    target = tmp_path / "out"
    assert mulm("export", good_wf, "-f", "python-package", "-o", target).returncode == 0
    before = snapshot(target)
    bad = write_malformed(tmp_path, "cycle")
    proc = mulm("export", bad, "-f", "python-package", "-o", target)
    assert proc.returncode == 2
    assert snapshot(target) == before


def test_export_all_formats_one_subfolder_each(good_wf, tmp_path):
    proc = mulm("export", good_wf, "-f", "all", "-o", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    for fmt in FORMATS:
        assert (tmp_path / "o" / fmt / "mulm-manifest.json").is_file() or (tmp_path / "o" / "mulm-manifest.json").is_file()


# -- mulm check and mulm formats -------------------------------------------------------------------


def test_check_rag_lists_unusable_blocks():
    proc = mulm("check", RAG)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    cannot = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("cannot run:")]
    assert len(cannot) == 3, cannot
    for nid, line in zip(("doc-input", "embeddings", "vector-store"), cannot, strict=False):
        assert f"node '{nid}'" in line, line
    # every block is listed with its id
    for nid in ("doc-input", "question-input", "embeddings", "vector-store", "retriever", "llm-generator"):
        assert re.search(rf"^\s+{re.escape(nid)}\t", proc.stdout, re.MULTILINE), nid


def test_check_good_workflow_exits_0():
    proc = mulm("check", IRIS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cannot run" not in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("Iris MLP classifier: 6 blocks")


@pytest.mark.parametrize("name", ["not-json", "cycle", "dangling-edge"])
def test_check_malformed_is_one_error_line(tmp_path, name):
    proc = mulm("check", write_malformed(tmp_path, name))
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ") and MALFORMED[name][1] in line


def test_formats_lists_registered_formats():
    proc = mulm("formats")
    assert proc.returncode == 0, proc.stderr
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert names == sorted(names) or set(FORMATS) <= set(names)
    for fmt in FORMATS:
        assert fmt in names
    for line in proc.stdout.splitlines():
        name, description = line.split("\t")
        assert description.strip(), f"format {name} has no description"


@pytest.mark.parametrize("argv", [[], ["export"], ["export", "x.json"], ["frobnicate"]])
def test_usage_errors_exit_2_without_traceback(argv):
    proc = mulm(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "usage: mulm" in proc.stderr


def test_version():
    from pytest_mulm import __version__

    proc = mulm("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"mulm {__version__}"


# -- pytest --mulm-workflow with bad input ---------------------------------------------------------


@pytest.mark.parametrize("name,node", [
    ("cycle", "node 'dense'"), ("unknown-block-type", "node 'sm'"), ("dangling-edge", "edge 'loose'"),
    ("duplicate-id", "node 'sm'"), ("source-does-not-parse", "node 'py'"),
])
def test_pytest_malformed_workflow_is_usage_error(pytester, name, node):
    wf = write_malformed(pytester.path, name)
    result = pytester.runpytest(f"--mulm-workflow={wf.name}", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "INTERNALERROR" not in err + result.stdout.str()
    assert "Traceback" not in err
    errors = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert len(errors) == 1, err
    assert node in errors[0], errors[0]
    assert not (pytester.path / "mulm-out").exists()


def test_pytest_not_json_is_usage_error(pytester):
    wf = write_malformed(pytester.path, "not-json")
    result = pytester.runpytest(f"--mulm-workflow={wf.name}", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *not-json.json*not valid JSON*"])
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_pytest_missing_workflow_is_usage_error(pytester):
    result = pytester.runpytest("--mulm-workflow=missing.json", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *missing.json*"])


def test_pytest_unknown_format_lists_available(pytester, good_wf):
    result = pytester.runpytest(f"--mulm-workflow={good_wf}", "--mulm-format=python-package,pdf-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "INTERNALERROR" not in err + result.stdout.str()
    errors = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert len(errors) == 1, err
    assert "pdf-report" in errors[0]
    for fmt in FORMATS:
        assert fmt in errors[0]


def test_pytest_unusable_blocks_are_usage_error(pytester):
    result = pytester.runpytest(f"--mulm-workflow={RAG}", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "INTERNALERROR" not in err and "Traceback" not in err
    assert err.startswith("ERROR: ")
    for nid in ("doc-input", "embeddings", "vector-store"):
        assert f"'{nid}'" in err


def test_pytest_malformed_in_subprocess(pytester):
    """The same through a real pytest process (entry-point loading, exit status)."""
    wf = write_malformed(pytester.path, "dangling-edge")
    result = pytester.runpytest_subprocess(f"--mulm-workflow={wf.name}", "--mulm-format=python-package", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    result.stderr.fnmatch_lines(["ERROR: *edge 'loose'*nowhere*"])


def test_pytest_without_workflow_is_untouched(pytester):
    pytester.makepyfile("def test_ok():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "mulm-out").exists()


# -- hostile strings in messages and listings ------------------------------------------------------

FORGED = "nowhere\nmulm: error: forged\x1b[2J"


def _dangling_hostile() -> dict:
    doc = _good()
    doc["edges"].append({"id": "loose", "source": "sm", "target": FORGED})
    return doc


def test_error_stays_one_line_with_hostile_ids(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_dangling_hostile()), encoding="utf-8")
    proc = mulm("export", wf, "-f", "python-package", "-o", tmp_path / "o")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mulm: error: edge 'loose'")
    assert "\x1b" not in proc.stderr


def test_pytest_usage_error_stays_one_line_with_hostile_ids(pytester):
    wf = pytester.path / "wf.json"
    wf.write_text(json.dumps(_dangling_hostile()), encoding="utf-8")
    result = pytester.runpytest(f"--mulm-workflow={wf.name}", "--mulm-format=python-package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [result.stderr.lines[0]]
    assert "\x1b" not in result.stderr.str()


def test_check_escapes_hostile_labels(tmp_path):
    doc = _good()
    doc["nodes"][2]["data"]["label"] = "soft\n  cannot run: forged\x1b[2J\r"
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(doc), encoding="utf-8")
    proc = mulm("check", wf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.lstrip().startswith("cannot run")] == []
    assert len(proc.stdout.splitlines()) == 1 + len(doc["nodes"]), proc.stdout
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", proc.stdout), repr(proc.stdout)


def test_export_missing_templates_folder_is_an_error(good_wf, tmp_path):
    proc = mulm("export", good_wf, "-f", "python-package", "-o", tmp_path / "o", "--templates", tmp_path / "no-such-dir")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ") and "no-such-dir" in line


def test_export_broken_template_override_is_one_line(good_wf, tmp_path):
    tpl = tmp_path / "tpl" / "python-package"
    tpl.mkdir(parents=True)
    (tpl / "README.md.jinja").write_text("{% if %}\n", encoding="utf-8")
    proc = mulm("export", good_wf, "-f", "python-package", "-o", tmp_path / "o", "--templates", tmp_path / "tpl")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("mulm: error: ") and "README.md.jinja" in line
    assert not (tmp_path / "o").exists()
