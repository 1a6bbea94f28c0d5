"""Hostile workflow strings are data, never code (design.md §10).

A workflow whose labels, descriptions, ids, names, example strings and config strings are
full of quotes, triple quotes, backslashes, line breaks, Jinja2 syntax, shell syntax and
Python that would create marker files if it ever ran. Exporting it (and running the full
python-package verification on it) must write only inside the output folder, produce
Python that parses and carries those strings only as literals or comments, render no
workflow string as a template, and execute nothing.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from pytest_mulm.exporting import export_workflow
from pytest_mulm.loader import load_workflow

BIN = Path(sys.executable).parent
MULM = BIN / "mulm"
ADVISORIES = Path(__file__).resolve().parent / "data" / "advisories"
MARKERS = ("PWNED", "PWNED2", "PWNED3", "PWNED4", "PWNED5")
LONG = "Ł" + "long label 'q' \"dq\" \\ " * 400  # ~8,800 characters

# {{ 7*7 }} and a closed for-loop rendered as templates would give these; the raw text
# surrounds them with sentinels so the search cannot hit a digit inside a float.
RENDERED = [re.compile(r"Q\s*49\s*Q"), re.compile(r"RX+R")]
JINJA_EXPR = "Q{{ 7*7 }}Q"
JINJA_LOOP = "R{% for x in range(3) %}X{% endfor %}R"
JINJA_OPEN = "{% for x in range(3) %}"


def payloads(marker_dir: Path) -> dict[str, str]:
    """The hostile strings; every one that ran would create a marker file in marker_dir."""
    m = str(marker_dir)
    py = f"__import__('os').system('touch {m}/PWNED')"
    opener = f"open('{m}/PWNED2','w')"
    shell = f"$(touch {m}/PWNED3) `touch {m}/PWNED4`"
    return {
        "py": py,
        "open": opener,
        "shell": shell,
        # breaking out of '...', "...", '''...''', """...""", f-strings and comments
        "breakouts": (
            f"'); {py} #\"); {py} #'''); {py} #\"\"\"); {py} # {{{py}}} \\'; {opener}; '\n{py}\n#"
        ),
        "quotes": "single ' double \" triple \"\"\" and ''' backslash \\ end \\",
        "newlines": "line1\nline2\r\nline3\rline4 \x0b\x0c tab\t",
        "jinja": f"{JINJA_EXPR} {JINJA_LOOP} {JINJA_OPEN} {{# c #}} {{{{ cycler.__init__.__globals__.os.system('touch {m}/PWNED5') }}}}",
        "paths": "../../evil /etc/passwd ..\\..\\evil",
        "unicode": "ñandú 节点 🚀 Ω \u202eevil\u202c \u00a0nbsp",
    }


def hostile(marker_dir: Path) -> str:
    """One string holding every payload, for labels, descriptions and names."""
    return " | ".join(payloads(marker_dir).values())


def hostile_no_cr(marker_dir: Path) -> str:
    # \r only where the exporter's known-safe paths handle it; see test_cr_in_python_block_title_is_not_code
    return hostile(marker_dir).replace("\r", " ")


# node ids: path traversal, absolute paths, quotes, Jinja, shell, unicode, newlines
IDS = {
    "tensor": "../../evil",
    "text": "/etc/passwd",
    "py": "ñandú-节点 'q' \"dq\" ''' \"\"\" \\",
    "dense": "dense {{ 7*7 }} {% for x in range(3) %}",
    "softmax": "soft\nmax\r\n $(touch PWNED3) `id`",
    "out": "../../../../tmp/evil-out",
    "llm": "llm __import__('os').system('id') #",
    "out2": "C:\\evil\\out2",
}


def hostile_workflow(marker_dir: Path) -> dict:
    h = hostile(marker_dir)
    h_safe = hostile_no_cr(marker_dir)
    p = payloads(marker_dir)

    def node(nid, type_, label, config, **data):
        return {"id": nid, "type": "aiBlock", "position": {"x": 0, "y": 0},
                "data": {"label": label, "type": type_, "description": h, "config": config, **data}}

    nodes = [
        node(IDS["tensor"], "input", h, {
            "inputType": "tensor", "shape": [2], "examples": [[1.0, 2.0], [-0.5, 0.25]],
            "note": h, "featureNames": [p["py"], p["quotes"]],
        }, category="input"),
        node(IDS["text"], "input", LONG, {
            "inputType": "text",
            "examples": [h, f"{JINJA_EXPR} {p['breakouts']} {p['shell']} {p['quotes']}"],
        }, category="input"),
        node(IDS["py"], "python", h_safe, {"dependencies": []},
             sourceCode="def scale(x):\n    \"\"\"Benign block code.\"\"\"\n    return [float(v) * 2.0 for v in x]\n"),
        node(IDS["dense"], "dense", LONG, {
            "units": 2, "activation": "tanh", "comment": h,
            "weights": {"kernel": [[0.5, -0.25], [0.125, 0.75]], "bias": [0.1, -0.1]},
        }),
        node(IDS["softmax"], "softmax", h, {}),
        node(IDS["out"], "output", h, {"labels": [h, p["py"] + " " + JINJA_EXPR]}, category="output"),
        node(IDS["llm"], "llm", h, {
            "model": "gpt-4o-mini",
            "systemPrompt": h,
            # a Jinja2 template by design: {% raw %} keeps Jinja text literal, {{ input }}
            # inserts the upstream text (which must not be rendered a second time)
            "promptTemplate": (
                f"{{% raw %}}{JINJA_EXPR} {JINJA_LOOP} {JINJA_OPEN}{{% endraw %}} {p['quotes']} {p['newlines']} "
                f"Answer {{{{ input }}}} now. {p['py']} {p['shell']}"
            ),
            "temperature": 0.2, "maxTokens": 50,
        }),
        node(IDS["out2"], "output", h, {}, category="output"),
    ]
    chain = [("tensor", "py"), ("py", "dense"), ("dense", "softmax"), ("softmax", "out"),
             ("text", "llm"), ("llm", "out2")]
    edges = [
        {"id": f"e{i} '\"\\ {{{{ 7*7 }}}} ../../evil\n", "source": IDS[a], "target": IDS[b],
         "sourceHandle": None, "targetHandle": None}
        for i, (a, b) in enumerate(chain)
    ]
    return {
        "id": f"../../evil {h}",
        "name": f"../../evil/{h_safe} {LONG}",
        "description": h,
        "version": "1.0.0",
        "tags": [h],
        "nodes": nodes,
        "edges": edges,
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }


# -- helpers ---------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root: files with size and mtime, folders by existence (their
    mtime changes whenever a child is added)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[str(Path(dirpath, name).relative_to(root))] = ("dir",)
        for name in filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def assert_no_markers(marker_dir: Path) -> None:
    found = [name for name in MARKERS if (marker_dir / name).exists()]
    assert not found, f"a hostile string was executed: {found} exist in {marker_dir}"


def escape_targets(*bases: Path) -> list[Path]:
    """Where ../../evil style ids would land if used as paths relative to these folders."""
    names = ["evil", "evil-out", "tmp/evil-out"]
    targets = {Path("/tmp/evil-out"), Path("/evil"), Path("/tmp/evil")}
    for base in bases:
        for up in range(1, 5):
            for name in names:
                targets.add((base / Path(*[".."] * up) / name).resolve())
    return sorted(targets)


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.is_file())


def text_files(root: Path) -> list[Path]:
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix not in (".npz", ".whl", ".pyc"):
            files.append(p)
    return files


@pytest.fixture
def hostile_env(tmp_path):
    """tmp_path/markers: where executed payloads would write; tmp_path/work: the cwd."""
    markers = tmp_path / "markers"
    markers.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    wf_path = work / "hostile.json"
    wf_path.write_text(json.dumps(hostile_workflow(markers), ensure_ascii=False, indent=1), encoding="utf-8")
    passwd = Path("/etc/passwd")
    stamp = passwd.stat().st_mtime_ns if passwd.exists() else None
    escapes = escape_targets(work, work / "out", work / "out" / "src")
    assert not [t for t in escapes if t.exists()], "leftover escape targets from an earlier run"
    yield {"tmp": tmp_path, "markers": markers, "work": work, "wf": wf_path}
    assert_no_markers(markers)
    assert (passwd.stat().st_mtime_ns if passwd.exists() else None) == stamp, "/etc/passwd was touched"
    assert not [t for t in escapes if t.exists()], "a file was written outside the output folder"


# -- the workflow itself ---------------------------------------------------------------------


def test_hostile_workflow_loads_with_strings_intact(hostile_env):
    wf = load_workflow(hostile_env["wf"])
    doc = json.loads(hostile_env["wf"].read_text(encoding="utf-8"))
    assert wf.id == doc["id"] and wf.name == doc["name"] and wf.description == doc["description"]
    assert {n.id for n in wf.nodes} == set(IDS.values())
    assert not wf.problems
    assert len(wf.examples) == 2
    assert_no_markers(hostile_env["markers"])


# -- (a) mulm export -----------------------------------------------------------------------------


def _export(env, fmt: str) -> tuple[Path, subprocess.CompletedProcess]:
    out = env["work"] / "out"
    before = snapshot(env["tmp"])
    proc = subprocess.run(
        [str(MULM), "export", str(env["wf"]), "--format", fmt, "-o", str(out)],
        cwd=env["work"], capture_output=True, text=True, check=False, timeout=300,
    )
    assert proc.returncode == 0, f"mulm export failed:\n{proc.stdout}\n{proc.stderr}"
    after = snapshot(env["tmp"])
    outside = {p for p in changed(before, after) if not (p == "work/out" or p.startswith("work/out/"))}
    assert not outside, f"files changed outside the output folder: {sorted(outside)}"
    return out, proc


@pytest.fixture(params=["python-package", "fastapi-service"])
def exported(hostile_env, request):
    out, proc = _export(hostile_env, request.param)
    return {**hostile_env, "out": out, "proc": proc}


def test_export_succeeds_and_stays_inside(exported):
    out = exported["out"]
    assert str(out) in exported["proc"].stdout
    assert (out / "mulm-manifest.json").is_file()
    assert_no_markers(exported["markers"])
    root = out.resolve()
    for path in out.rglob("*"):
        # no symlinks pointing out, no file resolving outside, slugified names only
        assert not path.is_symlink(), path
        assert root in path.resolve().parents, path
        rel = path.relative_to(out)
        for part in rel.parts:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+", part), f"unsanitised path component {part!r} in {rel}"
            assert len(part) <= 100, f"overlong path component in {rel}"


def test_generated_python_parses_and_has_no_injected_code(exported):
    files = python_files(exported["out"])
    assert len(files) >= 8
    forbidden_names = {"__import__", "PWNED", "PWNED2", "PWNED3", "PWNED4", "PWNED5", "touch", "passwd", "cycler"}
    for path in files:
        source = path.read_text(encoding="utf-8")
        assert "\x00" not in source
        tree = ast.parse(source, filename=str(path))
        compile(tree, str(path), "exec")
        names = set()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            assert tok.type != tokenize.ERRORTOKEN, f"{path.name}: error token {tok.string!r} at {tok.start}"
            if tok.type == tokenize.NAME:
                names.add(tok.string)
        assert not names & forbidden_names, f"{path.relative_to(exported['out'])}: hostile names as code: {names & forbidden_names}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                assert called not in ("__import__", "system", "eval", "exec"), f"{path.name}: call to {called}"
        # every line break in the file is a line break Python and every editor agree on:
        # a lone \r (or \x0c\x1c\u2028 ...) inside a comment would end it for some readers
        assert "\r" not in source, f"{path.name}: carriage return in generated source"


def test_hostile_strings_survive_as_exact_literals(exported):
    """The strings reach the code exactly (repr), not mangled and not interpolated."""
    wf = load_workflow(exported["wf"])
    pkg = next(p for p in (exported["out"] / "src").iterdir() if (p / "pipeline.py").is_file())
    pipeline = ast.parse((pkg / "pipeline.py").read_text(encoding="utf-8"))
    consts = {}
    for node in pipeline.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    assert consts["WORKFLOW_ID"] == wf.id
    assert consts["WORKFLOW_NAME"] == wf.name
    assert consts["INPUTS"] == list(wf.inputs)
    assert consts["OUTPUTS"] == list(wf.outputs)
    strings = {n.value for n in ast.walk(pipeline) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    llm = wf.node(IDS["llm"])
    assert llm.config["promptTemplate"] in strings
    assert llm.config["systemPrompt"] in strings
    for label in wf.node(IDS["out"]).config["labels"]:
        assert label in strings
    init = ast.parse((pkg / "__init__.py").read_text(encoding="utf-8"))
    description = next(ast.literal_eval(n.value) for n in init.body
                       if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "DESCRIPTION")
    assert description == wf.description
    examples = json.loads((pkg / "examples.json").read_text(encoding="utf-8"))
    assert [e["input"] for e in examples] == list(wf.examples)


def test_no_workflow_string_is_rendered_as_a_template(exported):
    for path in text_files(exported["out"]):
        text = path.read_bytes().decode("utf-8", "replace")
        for pattern in RENDERED:
            assert not pattern.search(text), f"{path.relative_to(exported['out'])}: a workflow string was rendered as Jinja ({pattern.pattern})"
    readme = (exported["out"] / "README.md").read_text(encoding="utf-8")
    assert "Q{{ 7*7 }}Q" in readme  # the name/description are shown, as text


def test_pyproject_is_valid_toml_with_slug_names(exported):
    import tomllib

    meta = tomllib.loads((exported["out"] / "pyproject.toml").read_text(encoding="utf-8"))
    name = meta["project"]["name"]
    assert re.fullmatch(r"[a-z][a-z0-9-]*", name) and len(name) <= 60
    (script,) = meta["project"]["scripts"]
    assert re.fullmatch(r"[a-z][a-z0-9-]*", script)


def test_generated_package_runs_without_executing_strings(exported):
    """Import the generated package and run every example (quick stand-in for the venv suite)."""
    out = exported["out"]
    pkg = next(p for p in (out / "src").iterdir() if (p / "pipeline.py").is_file())
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module({pkg.name!r})\n"
        "for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    if not info.name.endswith('.__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "res = [pkg.run(e['input']) for e in pkg.examples()]\n"
        "exp = [e['expected'] for e in pkg.examples()]\n"
        "print(json.dumps({'res': res, 'exp': exp}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(out / "src")
    proc = subprocess.run([sys.executable, "-c", code], cwd=exported["work"], env=env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_markers(exported["markers"])
    data = json.loads(proc.stdout)
    assert len(data["res"]) == 2
    for got, exp in zip(data["res"], data["exp"], strict=False):
        assert got.keys() == exp.keys()
        llm_out = got[IDS["out2"]]
        assert llm_out == exp[IDS["out2"]]
        # the prompt's {% raw %} block comes back literally; upstream text is not re-rendered
        assert "Q{{ 7*7 }}Q" in llm_out and not any(p.search(llm_out) for p in RENDERED)
        assert got[IDS["out"]]["label"] == exp[IDS["out"]]["label"]


def test_export_api_into_cache_stays_inside(hostile_env):
    wf = load_workflow(hostile_env["wf"])
    before = snapshot(hostile_env["tmp"])
    result = export_workflow(wf, "python-package", out_dir=hostile_env["work"] / "cache")
    after = snapshot(hostile_env["tmp"])
    outside = {p for p in changed(before, after) if not p.startswith("work/cache")}
    assert not outside, sorted(outside)
    assert (hostile_env["work"] / "cache").resolve() in result.path.resolve().parents
    again = export_workflow(wf, "python-package", out_dir=hostile_env["work"] / "cache")
    assert again.from_cache and again.path == result.path


# -- bugs found by these tests, fixed; one regression test each -----------------------------------


def _single_python_block(*, label: str, nid: str = "py") -> dict:
    return {
        "id": "cr", "name": "cr", "nodes": [
            {"id": "in", "type": "aiBlock", "data": {"label": "in", "type": "input",
                                                    "config": {"inputType": "number", "examples": [1]}}},
            {"id": nid, "type": "aiBlock", "data": {"label": label, "type": "python",
                                                   "sourceCode": "def f(x):\n    return x + 1\n"}},
            {"id": "out", "type": "aiBlock", "data": {"label": "out", "type": "output", "config": {}}},
        ],
        "edges": [{"id": "a", "source": "in", "target": nid}, {"id": "b", "source": nid, "target": "out"}],
    }


CR_PAYLOAD = "label\r__import__('os').system('touch {m}/PWNED')\r#"


@pytest.mark.parametrize("where", ["label", "id"])
def test_cr_in_python_block_title_is_not_code(tmp_path, where):
    """A carriage return in a Python block's label or id must not end the header comment
    of the copied block module (Python treats a lone \\r as a line break)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    payload = CR_PAYLOAD.format(m=markers)
    doc = _single_python_block(label=payload if where == "label" else "py",
                               nid=payload if where == "id" else "py")
    wf_path = tmp_path / "cr.json"
    wf_path.write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run([str(MULM), "export", str(wf_path), "--format", "python-package", "-o", str(out)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pkg = next(p for p in (out / "src").iterdir() if (p / "pipeline.py").is_file())
    env = {**os.environ, "PYTHONPATH": str(out / "src")}
    run = subprocess.run([sys.executable, "-c", f"import {pkg.name} as p; print(p.run(1))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "2"
    assert_no_markers(markers)
    for path in python_files(out):
        assert "\r" not in path.read_text(encoding="utf-8"), path


# -- (b) the full verification run -------------------------------------------------------------------


# detect-secrets sees the payloads (long paths and shell snippets, a '/etc/passwd' key) as
# possible secrets; a user accepts such findings the same way, with a written reason
ACCEPTED = [
    {"check": "secrets", "rule": "Base64 High Entropy String", "file": "*",
     "reason": "the hostile workflow's payload strings (paths, shell snippets), copied as data"},
    {"check": "secrets", "rule": "Secret Keyword", "file": "README.md", "reason": "the payload's '/etc/passwd' key"},
]
# security items that may skip here, and the reason they must give
SECURITY_SKIPS = ("pip-audit not run: PyPI's JSON API", "safety is off")


@pytest.mark.slow
@pytest.mark.parametrize("fmt, items", [("python-package", 9 + 7), ("fastapi-service", 26 + 7)])
def test_full_verification_of_hostile_workflow(hostile_env, fmt, items):
    work, tmp = hostile_env["work"], hostile_env["tmp"]
    def beside(k):
        return k != tmp.name and not k.startswith(tmp.name + "/")

    (work / "accepted.json").write_text(json.dumps(ACCEPTED), encoding="utf-8")
    before_parent = {k: v for k, v in snapshot(tmp.parent).items() if beside(k)}
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTHONPATH") and not k.startswith("PYTEST_XDIST")}
    env["MULM_JWT_SECRET"] = "hostile-run-secret-0123456789"  # so the leak check has a value to look for
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"--mulm-workflow={hostile_env['wf'].name}", f"--mulm-format={fmt}",
         "-p", "no:cacheprovider", f"--basetemp={tmp / 'basetemp'}", "-rA", "-q",
         "--mulm-security-baseline=accepted.json", f"--mulm-advisories={ADVISORIES}", "--mulm-advisories-max-age=100000"],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=1200,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    summary = [line for line in proc.stdout.splitlines() if re.search(r"\d+ passed", line)]
    assert summary, tail
    passed = int(re.search(r"(\d+) passed", summary[-1]).group(1))
    skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", summary[-1])) else 0
    assert passed + skipped == items and skipped <= len(SECURITY_SKIPS), summary[-1]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == skipped and all(any(r in line for r in SECURITY_SKIPS) for line in skips), skips
    assert not re.search(r"failed|error|xfail", summary[-1]), summary[-1]
    assert_no_markers(hostile_env["markers"])
    # the export, the reports (json, md, html) and the terminal output render no workflow string
    for path in text_files(work / "mulm-out"):
        text = path.read_bytes().decode("utf-8", "replace")
        assert not any(p.search(text) for p in RENDERED), path
    assert not any(p.search(proc.stdout + proc.stderr) for p in RENDERED)
    after_parent = {k: v for k, v in snapshot(tmp.parent).items() if beside(k)}
    assert not changed(before_parent, after_parent), "files written next to the test's folder"
    outside = [p for p in snapshot(tmp) if not (p.startswith(("work", "basetemp")) or p == "markers")]
    assert not outside, outside


def _tiny(**top) -> dict:
    """input tensor [2] -> softmax -> output; ``top`` overrides workflow keys, ``label`` the input label."""
    label = top.pop("label", "in")
    labels = top.pop("labels", None)
    return {
        "id": "tiny", "name": "tiny", "version": "1.0.0", **top,
        "nodes": [
            {"id": "in", "type": "aiBlock", "data": {"label": label, "type": "input",
                                                    "config": {"inputType": "tensor", "shape": [2], "examples": [[1.0, 2.0]]}}},
            {"id": "sm", "type": "aiBlock", "data": {"label": "sm", "type": "softmax", "config": {}}},
            {"id": "out", "type": "aiBlock", "data": {"label": "out", "type": "output",
                                                     "config": {"labels": labels} if labels else {}}},
        ],
        "edges": [{"id": "a", "source": "in", "target": "sm"}, {"id": "b", "source": "sm", "target": "out"}],
    }


def _mulm_export(tmp_path: Path, doc: dict) -> tuple[subprocess.CompletedProcess, Path]:
    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(doc), encoding="utf-8")  # ensure_ascii: lone surrogates survive as \ud800
    out = tmp_path / "out"
    proc = subprocess.run([str(MULM), "export", str(wf_path), "--format", "python-package", "-o", str(out)],
                          capture_output=True, text=True, check=False, timeout=120)
    return proc, out


def test_lone_surrogate_is_a_clean_error_not_a_traceback(tmp_path):
    proc, _ = _mulm_export(tmp_path, _tiny(label="bad \ud800 label"))
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode in (0, 2)
    if proc.returncode == 2:
        assert re.fullmatch(r"mulm: error: .*node 'in'.*\n", proc.stderr), proc.stderr


@pytest.mark.parametrize("where", ["label", "name"])
def test_nul_in_strings_still_exports(tmp_path, where):
    proc, out = _mulm_export(tmp_path, _tiny(**{where: "a\x00b"}))
    assert proc.returncode == 0, proc.stderr
    for path in python_files(out):
        ast.parse(path.read_text(encoding="utf-8"))


def test_control_characters_in_description_give_valid_toml(tmp_path):
    import tomllib

    proc, out = _mulm_export(tmp_path, _tiny(description="del \x7f here \x1b[31m"))
    assert proc.returncode == 0, proc.stderr
    meta = tomllib.loads((out / "pyproject.toml").read_text(encoding="utf-8"))
    assert "del" in meta["project"]["description"]


@pytest.mark.parametrize("name", ["json", "numpy", "pytest"])
def test_workflow_name_cannot_shadow_a_module(tmp_path, name):
    proc, out = _mulm_export(tmp_path, _tiny(name=name))
    assert proc.returncode == 0, proc.stderr
    (pkg,) = [p.name for p in (out / "src").iterdir() if (p / "__init__.py").is_file()]
    assert pkg not in sys.stdlib_module_names and pkg not in {"numpy", "jinja2", "pytest", "setuptools"}, pkg


def test_non_string_labels_match_the_reference(tmp_path):
    proc, out = _mulm_export(tmp_path, _tiny(labels=[1, 2]))
    if proc.returncode == 2:  # refusing non-string labels at load is also fine
        assert "labels" in proc.stderr
        return
    env = {**os.environ, "PYTHONPATH": str(out / "src")}
    run = subprocess.run([sys.executable, "-c", ("import json, tiny as p; e = p.examples()[0]; "
                          "print(json.dumps([p.run(e['input']), e['expected']]))")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=60)
    got, expected = json.loads(run.stdout)
    assert got == expected
