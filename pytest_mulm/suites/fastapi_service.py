"""Verification suite of the ``fastapi-service`` format (design.md §6).

Installs the service into a fresh venv, starts it as a real uvicorn process on a free
loopback port, checks its operational endpoints and its answers against the reference
runtime, then attacks it: missing and wrong credentials, forged and expired tokens,
floods, oversized and ill-typed bodies, and looks for leaked internals in every error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pytest_mulm.checks import library_package, run_artifact_tests
from pytest_mulm.ops import differences

MULM_FORMAT = "fastapi-service"
RTOL = 1e-5
LEAKS = ("Traceback", 'File "', "site-packages", "/tmp/", "line ")


def _httpx():
    return pytest.importorskip("httpx", reason="httpx is not installed: pip install 'pytest-mulm[api]'")


def _jwt():
    return pytest.importorskip("jwt", reason="PyJWT is not installed: pip install 'pytest-mulm[api]'")


def _config(export) -> dict:
    found = list((export.path / "src").glob("*_service/service_config.json"))
    assert len(found) == 1, "the artifact must carry exactly one service_config.json"
    return json.loads(found[0].read_text(encoding="utf-8"))


def _auth_off(export) -> bool:
    return _config(export)["auth_type"] == "none"


def _skip_if_auth_off(export) -> None:
    if _auth_off(export):
        pytest.skip("authentication is disabled by the workflow (deploymentConfig.authentication.type = none); "
                    "the report flags it")


def _headers(service, export) -> dict[str, str]:
    return {} if _auth_off(export) else {"X-API-Key": service.api_key}


def _token(service, export, **claims) -> str:
    jwt = _jwt()
    config = _config(export)
    now = int(time.time())
    body = {"sub": "mulm-suite", "aud": config["jwt_audience"], "exp": now + 300, "iat": now, "scope": "predict"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, service.jwt_secret, algorithm="HS256")


def _example_body(reference) -> dict:
    return {"input": reference[0].input}


def _reference_outputs(reference) -> list:
    missing = sorted({r.missing_module for r in reference if r.missing_module})
    if missing:
        pytest.skip(f"the reference runtime cannot run here: block dependency {', '.join(missing)} is not installed")
    broken = [r.error for r in reference if not r.ok]
    assert not broken, "the reference runtime fails on the workflow's own examples:\n" + "\n".join(broken)
    return [r.output for r in reference]


def test_install(mulm_install):
    assert mulm_install["ok"], f"install into a fresh venv failed:\n{mulm_install['log']}"


def test_service_own_tests(mulm_venv, mulm_export, mulm_run_dir):
    out, summary = run_artifact_tests(mulm_venv, mulm_export, mulm_run_dir)
    assert out.returncode == 0, "the service's own tests failed inside the venv:\n" + "\n".join(summary + ["", out.tail(40)])
    assert " passed" in out.stdout, out.tail()


def test_health(mulm_service):
    r = _httpx().get(mulm_service.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready(mulm_service):
    r = _httpx().get(mulm_service.url + "/ready", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready"}


def test_metrics(mulm_service, mulm_export, mulm_reference):
    httpx = _httpx()
    httpx.post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
               headers=_headers(mulm_service, mulm_export), timeout=30)
    r = httpx.get(mulm_service.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'mulm_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'mulm_request_duration_seconds_bucket{le="0.005",route="/v1/predict"}' in text
    assert "mulm_ready 1.0" in text


def test_predict_parity(mulm_service, mulm_export, mulm_reference):
    expected = _reference_outputs(mulm_reference)
    httpx = _httpx()
    problems = []
    for i, (ref, want) in enumerate(zip(mulm_reference, expected, strict=True)):
        r = httpx.post(mulm_service.url + "/v1/predict", json={"input": ref.input},
                       headers=_headers(mulm_service, mulm_export), timeout=60)
        if r.status_code != 200:
            problems.append(f"example {i}: HTTP {r.status_code}: {r.text[:300]}")
            continue
        problems += [f"example {i}: {d}" for d in differences(r.json()["output"], want, rtol=RTOL)]
    assert not problems, "the service disagrees with the reference runtime:\n" + "\n".join(problems[:20])


def test_batch_parity(mulm_service, mulm_export, mulm_reference):
    expected = _reference_outputs(mulm_reference)
    r = _httpx().post(mulm_service.url + "/v1/predict/batch", json={"inputs": [ref.input for ref in mulm_reference]},
                      headers=_headers(mulm_service, mulm_export), timeout=120)
    assert r.status_code == 200, r.text[:500]
    outputs = r.json()["outputs"]
    assert len(outputs) == len(expected)
    problems = [f"example {i}: {d}" for i, (got, want) in enumerate(zip(outputs, expected, strict=True))
                for d in differences(got, want, rtol=RTOL)]
    assert not problems, "batch answers disagree with the reference runtime:\n" + "\n".join(problems[:20])


def test_auth_rejects_missing_credentials(mulm_service, mulm_export, mulm_reference):
    _skip_if_auth_off(mulm_export)
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference), timeout=10)
    assert r.status_code == 401, r.text
    assert "WWW-Authenticate" in r.headers


def test_auth_rejects_wrong_key(mulm_service, mulm_export, mulm_reference):
    _skip_if_auth_off(mulm_export)
    wrong = mulm_service.api_key[:-1] + ("A" if mulm_service.api_key[-1] != "A" else "B")
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                      headers={"X-API-Key": wrong}, timeout=10)
    assert r.status_code in (401, 403), r.text


def test_jwt_accepts_valid_token(mulm_service, mulm_export, mulm_reference):
    _skip_if_auth_off(mulm_export)
    token = _token(mulm_service, mulm_export)
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text


def test_jwt_rejects_expired(mulm_service, mulm_export, mulm_reference):
    _skip_if_auth_off(mulm_export)
    token = _token(mulm_service, mulm_export, exp=int(time.time()) - 60, iat=int(time.time()) - 360)
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401, r.text


def test_jwt_rejects_bad_signature(mulm_service, mulm_export, mulm_reference):
    _skip_if_auth_off(mulm_export)
    jwt = _jwt()
    claims = jwt.decode(_token(mulm_service, mulm_export), options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-service-secret-" + "x" * 32, algorithm="HS256")
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                      headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert r.status_code == 401, r.text
    # the classic downgrade: an unsigned token
    unsigned = jwt.encode(claims, None, algorithm="none")
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                      headers={"Authorization": f"Bearer {unsigned}"}, timeout=10)
    assert r.status_code == 401, r.text


def test_jwt_rejects_wrong_audience(mulm_service, mulm_export, mulm_reference):
    _skip_if_auth_off(mulm_export)
    token = _token(mulm_service, mulm_export, aud="some-other-service")
    r = _httpx().post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401, r.text


def test_jwt_scope_policy(mulm_service, mulm_export, mulm_reference):
    """With roles configured a token needs the scope (403 without it); without roles any
    valid token may predict."""
    _skip_if_auth_off(mulm_export)
    httpx = _httpx()
    scope = _config(mulm_export)["required_scope"]
    token = _token(mulm_service, mulm_export, scope="read")
    r = httpx.post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if scope:
        assert r.status_code == 403, r.text
        granted = _token(mulm_service, mulm_export, scope=f"read {scope}")
        r = httpx.post(mulm_service.url + "/v1/predict", json=_example_body(mulm_reference),
                       headers={"Authorization": f"Bearer {granted}"}, timeout=30)
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 200, f"no roles are configured, so any valid token may predict: {r.text}"


@pytest.fixture
def limited_service(mulm_venv, mulm_export, mulm_run_dir, request):
    """A second server with the workflow's own rate limit (the shared one is unthrottled).

    A configured limit above 200 requests would make the check slow; it is then lowered
    to 5 per window and the item records that it did.
    """
    from pytest_mulm.fixtures import artifact_scripts
    from pytest_mulm.service import start_service

    config = _config(mulm_export)
    env = dict(mulm_venv.env)
    if config["rate_limit"] > 200:
        env["MULM_RATE_LIMIT"] = f"5/{config['rate_window']}"
        request.node.user_properties.append(("rate_limit_note", "configured limit lowered to 5 for the check"))
    command = next(n for n in artifact_scripts(mulm_export) if n.endswith("-service"))
    service = start_service(mulm_venv, command, log_dir=mulm_run_dir / "logs", env=env)
    yield service, (5 if "MULM_RATE_LIMIT" in env else config["rate_limit"])
    service.stop()


def test_rate_limit_429_with_retry_after(limited_service, mulm_export, mulm_reference):
    service, limit = limited_service
    httpx = _httpx()
    headers = _headers(service, mulm_export)
    codes = []
    with httpx.Client(timeout=30) as client:
        for _ in range(limit + 1):
            r = client.post(service.url + "/v1/predict", json=_example_body(mulm_reference), headers=headers)
            codes.append(r.status_code)
    assert codes[:limit] == [200] * limit, f"the first {limit} requests must pass: {codes}"
    assert codes[limit] == 429, f"request {limit + 1} must be refused: {codes}"
    retry = r.headers.get("Retry-After")
    assert retry is not None and retry.isdigit() and int(retry) >= 1, f"Retry-After: {retry!r}"
    # another client has its own budget
    if not _auth_off(mulm_export):
        other = httpx.post(service.url + "/v1/predict", json=_example_body(mulm_reference),
                           headers={"X-API-Key": service.api_keys[1]}, timeout=30)
        assert other.status_code == 200, other.text


def test_body_too_large_413(mulm_service, mulm_export):
    limit = _config(mulm_export)["max_body_bytes"]
    body = b'{"input": "' + b"x" * (limit + 1) + b'"}'
    r = _httpx().post(mulm_service.url + "/v1/predict", content=body,
                      headers={**_headers(mulm_service, mulm_export), "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413, r.text[:300]


def _wrongly_typed(value):
    if isinstance(value, str):
        return {"not": "text"}
    if isinstance(value, list):
        return "not a list"
    if isinstance(value, (int, float)):
        return "not a number"
    if isinstance(value, dict):
        return ["not", "an", "object"]
    return None


def test_wrong_types_422(mulm_service, mulm_export, mulm_reference):
    httpx = _httpx()
    headers = _headers(mulm_service, mulm_export)
    config = _config(mulm_export)
    if all(p["type"] == "any" for p in config["inputs"]):
        pytest.skip("the workflow's input port accepts any JSON value, so no body is ill-typed")
    bad_bodies = [{"input": _wrongly_typed(mulm_reference[0].input)}, {"wrong_field": 1}, {"input": mulm_reference[0].input, "extra": 1}]
    for body in bad_bodies:
        r = httpx.post(mulm_service.url + "/v1/predict", json=body, headers=headers, timeout=30)
        assert r.status_code == 422, f"{body!r} -> {r.status_code} {r.text[:300]}"
        assert isinstance(r.json()["detail"], list)


def test_no_traceback_or_path_in_errors(mulm_service, mulm_export, mulm_reference, mulm_venv):
    httpx = _httpx()
    url = mulm_service.url
    headers = {**_headers(mulm_service, mulm_export), "Content-Type": "application/json"}
    answers = [
        httpx.post(url + "/v1/predict", content=b"{not json", headers=headers, timeout=10),
        httpx.post(url + "/v1/predict", json={"input": _wrongly_typed(mulm_reference[0].input)}, headers=headers, timeout=10),
        httpx.post(url + "/v1/predict", json={"inputs": "x"}, headers=headers, timeout=10),
        httpx.post(url + "/v1/predict/batch", json={"inputs": []}, headers=headers, timeout=10),
        httpx.get(url + "/v1/predict", timeout=10),
        httpx.get(url + "/nowhere/../../etc/passwd", timeout=10),
        httpx.post(url + "/v1/predict", json=_example_body(mulm_reference), headers={"Authorization": "Bearer x.y.z"}, timeout=10),
    ]
    venv_path = str(Path(mulm_venv.path))
    for r in answers:
        assert r.status_code < 500, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
        for leak in (*LEAKS, venv_path):
            assert leak not in r.text, f"{r.request.method} {r.request.url.path} leaks {leak!r}: {r.text[:300]}"


def test_openapi_document(mulm_service, mulm_export, mulm_reference):
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator is not installed: pip install 'pytest-mulm[api]'")
    doc = _httpx().get(mulm_service.url + "/openapi.json", timeout=10).json()
    validator.validate(doc)
    paths = doc["paths"]
    assert {"/health", "/ready", "/metrics", "/v1/predict", "/v1/predict/batch"} <= set(paths)
    request_schema = json.dumps(doc["components"]["schemas"])
    assert json.dumps(mulm_reference[0].input) in request_schema or "examples" in request_schema, \
        "the OpenAPI document carries the workflow's examples"


def _schemathesis_command() -> list[str]:
    import shutil
    import sys

    beside = Path(sys.executable).parent / "schemathesis"
    found = str(beside) if beside.is_file() else shutil.which("schemathesis")
    if not found:
        pytest.skip("schemathesis is not installed: pip install 'pytest-mulm[api]'")
    return [found]


def test_schemathesis(mulm_service, mulm_export, mulm_run_dir):
    """Property-based attack on the OpenAPI document: no 5xx, no response that violates
    the schema, invalid data rejected, auth enforced (bounded, fixed seed)."""
    from pytest_mulm.venv import run

    args = [
        *_schemathesis_command(), "run", mulm_service.url + "/openapi.json",
        "--checks", "all", "--max-examples", "30", "--seed", "20261204",
        "--request-timeout", "30", "--no-color",
        "--report", "junit", "--report-dir", str(mulm_run_dir / "schemathesis"),
    ]
    if not _auth_off(mulm_export):
        args += ["--header", f"X-API-Key: {mulm_service.api_key}"]
    out = run(args, timeout=600)
    tail = out.tail(60).replace(mulm_service.api_key, "[key]")
    assert out.returncode == 0, f"schemathesis found problems:\n{tail}"
    assert "generated" in out.stdout, tail


def _bare_call_latency(venv, package: str, value, calls: int) -> dict[str, float]:
    """p50/p95 in ms of calling the workflow in-process, inside the artifact's venv."""
    code = (
        "import json, sys, time\n"
        f"import {package} as wf\n"
        "value = json.loads(sys.stdin.read())\n"
        "for _ in range(20): wf.run(value)\n"
        "times = []\n"
        f"for _ in range({calls}):\n"
        "    t = time.perf_counter(); wf.run(value); times.append(time.perf_counter() - t)\n"
        "times.sort()\n"
        "print(json.dumps({'p50': times[len(times)//2]*1000, 'p95': times[int(len(times)*0.95)]*1000}))\n"
    )
    out = venv.python_run(code, input=json.dumps(value), timeout=300)
    assert out.ok, out.tail()
    return json.loads(out.stdout)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def test_benchmark_latency(request, mulm_service, mulm_export, mulm_venv, mulm_reference):
    """p50/p95 latency and throughput of /v1/predict over loopback, and the service's
    overhead over the bare in-process call. Figures go to the report; no timing asserts."""
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip("pytest-benchmark is not installed: pip install 'pytest-mulm[bench]'")
    if getattr(benchmark, "disabled", False):
        pytest.skip("pytest-benchmark is disabled under xdist (or --benchmark-disable); run this item with -n 0")
    import threading

    httpx = _httpx()
    package = library_package(mulm_export.project_dir)
    value = mulm_reference[0].input
    body = json.dumps({"input": value}).encode()
    headers = {**_headers(mulm_service, mulm_export), "Content-Type": "application/json"}
    url = mulm_service.url + "/v1/predict"
    bare = _bare_call_latency(mulm_venv, package, value, calls=500)

    with httpx.Client(timeout=30) as client:
        for _ in range(30):  # warm connections and caches
            client.post(url, content=body, headers=headers)
        sequential: list[float] = []

        def one() -> None:
            started = time.perf_counter()
            r = client.post(url, content=body, headers=headers)
            sequential.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text

        benchmark.pedantic(one, rounds=300, iterations=1, warmup_rounds=0)

    clients, per_client = 8, 50
    concurrent: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=30) as c:
            for _ in range(per_client):
                started = time.perf_counter()
                r = c.post(url, content=body, headers=headers)
                with lock:
                    concurrent.append(time.perf_counter() - started)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    assert not errors, f"{len(errors)} failed requests under load, e.g. {errors[0]}"
    assert len(concurrent) == clients * per_client

    figures = {
        "p50_ms": round(_percentile(sequential, 0.5) * 1000, 3),
        "p95_ms": round(_percentile(sequential, 0.95) * 1000, 3),
        "concurrent_clients": clients,
        "concurrent_p50_ms": round(_percentile(concurrent, 0.5) * 1000, 3),
        "concurrent_p95_ms": round(_percentile(concurrent, 0.95) * 1000, 3),
        "throughput_rps": round(len(concurrent) / wall, 1),
        "bare_p50_ms": round(bare["p50"], 4),
        "bare_p95_ms": round(bare["p95"], 4),
        "overhead_p50_ms": round(_percentile(sequential, 0.5) * 1000 - bare["p50"], 3),
    }
    benchmark.extra_info.update(figures)
    request.node.user_properties.append(("mulm_benchmark", figures))
    print(json.dumps(figures))
