"""Verification suite of the ``huggingface-space`` format (design.md §6).

The Space's requirements go into a fresh venv; ``app.py`` runs there as its own process
on a free loopback port (no share link, analytics off, SSR off) and every named
endpoint is called through ``gradio_client`` on every example and compared with the
reference runtime. The front matter and the model card are validated offline with
huggingface_hub's card classes; a model card carrying the measured parity and latency
is written to ``<mulm-out>/space-runs/<key>/``; a screenshot of the page in headless
Chromium is attached to the report when Chromium is installed.
"""

from __future__ import annotations

import html
import json
import shutil
import statistics
import subprocess
import time
from typing import Any

import pytest

from pytest_mulm.ops import differences

MULM_FORMAT = "huggingface-space"
CHROMIUM_FLAGS = (
    # as root in a sandbox with a closed network: no sandbox, no GPU, no background calls
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def _config(export) -> dict[str, Any]:
    return json.loads((export.path / "space_config.json").read_text(encoding="utf-8"))


def _args(config: dict[str, Any], value: Any) -> list[Any]:
    """An example input as the endpoint's positional arguments (one per component)."""
    multi = len(config["inputs"]) > 1
    args: list[Any] = []
    for port in config["inputs"]:
        v = value[port["id"]] if multi else value
        if port["widget"] == "numbers":
            args.extend(v)
        elif port["widget"] == "json":
            args.append(json.dumps(v))
        else:
            args.append(v)
    return args


def _results(config: dict[str, Any], answer: Any) -> Any:
    """The workflow's result out of an endpoint's answer (JSON outputs come first)."""
    if config["interface"] == "chat":
        return answer
    n_outputs = len(config["outputs"])
    n_labels = sum(1 for o in config["outputs"] if o["labels"])
    values = list(answer) if n_outputs + n_labels > 1 else [answer]
    if n_outputs == 1:
        return values[0]
    return {o["id"]: v for o, v in zip(config["outputs"], values[:n_outputs], strict=True)}


@pytest.fixture
def space_app(mulm_venv, mulm_export, mulm_run_dir, _mulm_services):
    """The Space's ``app.py`` running in the fresh venv on a free loopback port (one per
    worker, stopped with the session's other servers)."""
    from pytest_mulm.service import free_port, start_process

    key = str(mulm_export.path)  # the export's folder: unique across formats
    if key not in _mulm_services:
        port = free_port()
        env = {
            "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
            "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SSR_MODE": "False",
            "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **mulm_venv.env,
        }
        try:
            _mulm_services[key] = start_process(
                [str(mulm_venv.python), "app.py"], port=port, cwd=mulm_export.path, env=env,
                log_dir=mulm_run_dir / "logs", ready_path="/gradio_api/info", timeout=180,
            )
        except RuntimeError as exc:
            pytest.fail(f"app.py did not start: {exc}", pytrace=False)
    return _mulm_services[key]


@pytest.fixture
def space_client(space_app):
    from gradio_client import Client

    return Client(space_app.url, verbose=False, download_files=False)


@pytest.fixture(scope="session")
def _space_call_memo() -> dict[str, Any]:
    return {}


@pytest.fixture
def space_calls(space_client, mulm_export, mulm_workflow, _space_call_memo) -> dict[str, Any]:
    """Every named endpoint called on every example (once per worker): answers and timings."""
    memo = _space_call_memo
    if mulm_export.key not in memo:
        config = _config(mulm_export)
        api = space_client.view_api(return_format="dict", print_info=False)
        endpoints = sorted(api["named_endpoints"])
        calls: dict[str, Any] = {"endpoints": endpoints, "answers": {}, "errors": {}, "seconds": []}
        for name in endpoints:
            answers, errors = [], []
            for value in mulm_workflow.examples:
                args = [value] if config["interface"] == "chat" else _args(config, value)
                started = time.perf_counter()
                try:
                    answers.append(_results(config, space_client.predict(*args, api_name=name)))
                except Exception as exc:  # the app's gr.Error arrives as the client's AppError
                    answers.append(None)
                    errors.append(f"{name} example {len(answers) - 1}: {type(exc).__name__}: {exc}")
                calls["seconds"].append(time.perf_counter() - started)
            calls["answers"][name], calls["errors"][name] = answers, errors
        memo[mulm_export.key] = calls
    return memo[mulm_export.key]


def test_install(mulm_install):
    assert mulm_install["ok"], f"the Space's requirements did not install into a fresh venv:\n{mulm_install['log']}"


def test_front_matter_validates(mulm_export, mulm_venv):
    from pytest_mulm.exporters.huggingface_space import card_problems

    text = (mulm_export.path / "README.md").read_text(encoding="utf-8")
    problems = card_problems(text, space=True)
    assert not problems, "README.md front matter:\n" + "\n".join(problems)
    from huggingface_hub import SpaceCard

    data = SpaceCard(text).data
    assert (mulm_export.path / data.app_file).is_file(), f"app_file {data.app_file!r} is not in the Space"
    out = mulm_venv.python_run("import gradio; print(gradio.__version__)", timeout=300)
    assert out.ok, out.tail()
    assert out.stdout.strip() == data.sdk_version, (
        f"sdk_version {data.sdk_version} is not the Gradio the suite tested ({out.stdout.strip()})")


def test_model_card_validates(mulm_export):
    from pytest_mulm.exporters.huggingface_space import card_problems

    text = (mulm_export.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    problems = card_problems(text, space=False)
    assert not problems, "MODEL_CARD.md:\n" + "\n".join(problems)
    for section in ("## Intended use", "## Limitations", "## Verification"):
        assert section in text, f"the model card has no {section!r} section"


def test_app_launches_on_loopback_without_share_or_analytics(space_app):
    import httpx

    config = httpx.get(space_app.url + "/config", timeout=30).json()
    log = space_app.log_tail(200)
    assert "gradio.live" not in log, "a public share link was created"
    assert config.get("analytics_enabled") is False, "Gradio analytics are on"
    assert space_app.url.startswith("http://127.0.0.1:")


def test_every_endpoint_equals_reference(space_calls, mulm_reference, mulm_export):
    config = _config(mulm_export)
    assert space_calls["endpoints"] == [f"/{config['api_name']}"], (
        f"the app exposes {space_calls['endpoints']}; expected exactly /{config['api_name']}")
    if any(r.missing_module for r in mulm_reference):
        pytest.skip("the reference runtime cannot run here: a block dependency is not installed in the verifying environment")
    broken = [r.error for r in mulm_reference if not r.ok]
    assert not broken, "the reference runtime fails on the workflow's own examples:\n" + "\n".join(broken)
    for name in space_calls["endpoints"]:
        assert not space_calls["errors"][name], "the app failed:\n" + "\n".join(space_calls["errors"][name])
        problems = [f"{name} example {i}: {d}" for i, (got, ref) in
                    enumerate(zip(space_calls["answers"][name], mulm_reference, strict=True))
                    for d in differences(got, ref.output, rtol=1e-5)]
        assert not problems, "the Space disagrees with the reference runtime:\n" + "\n".join(problems[:20])


def test_bad_input_gets_a_clear_error(space_client, mulm_export):
    from gradio_client.exceptions import AppError

    config = _config(mulm_export)
    if config["interface"] == "chat":
        pytest.skip("a chat accepts any text: there is no invalid message")
    # None for every component: an empty form
    args = [None] * sum(p.get("size", 1) if p["widget"] == "numbers" else 1 for p in config["inputs"])
    text_only = all(p["widget"] == "text" for p in config["inputs"])
    if text_only:
        pytest.skip("a text form accepts any input, including an empty one")
    with pytest.raises(AppError) as caught:
        space_client.predict(*args, api_name=f"/{config['api_name']}")
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message, f"a traceback reached the client: {message}"
    labels = [p["label"] for p in config["inputs"]]
    assert any(label in message for label in labels), f"the error does not name the input: {message}"


def test_sample_data_is_offered(space_app, mulm_export, mulm_workflow):
    import httpx

    from pytest_mulm.ops import to_jsonable

    lines = (mulm_export.path / "sample_data.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["input"] for line in lines] == [to_jsonable(v) for v in mulm_workflow.examples]
    config = httpx.get(space_app.url + "/config", timeout=30).json()
    buttons = [c for c in config["components"] if c.get("type") == "downloadbutton"]
    assert buttons, "the page has no download button for the sample data"
    value = buttons[0]["props"]["value"]
    url = value.get("url") or f"{space_app.url}/gradio_api/file={value['path']}"
    served = httpx.get(url, timeout=30)
    assert served.status_code == 200, f"the sample data is not served: {served.status_code}"
    assert served.text.splitlines() == lines


def test_benchmark_latency(space_calls, request):
    seconds = sorted(space_calls["seconds"])
    assert seconds, "no calls were made"
    figures = {"gradio_client_p50_ms": round(statistics.median(seconds) * 1000, 2),
               "gradio_client_max_ms": round(seconds[-1] * 1000, 2), "gradio_client_calls": len(seconds)}
    request.node.user_properties.append(("mulm_benchmark", figures))


def test_verified_model_card(space_calls, mulm_reference, mulm_export, mulm_workflow, mulm_settings, mulm_docs, request):
    """The card again, with the parity and latency this run measured, validated and kept."""
    from pytest_mulm.exporters.huggingface_space import card_problems, model_card_text
    from pytest_mulm.exporters.library import names_for
    from pytest_mulm.templating import make_environment

    if not all(r.ok for r in mulm_reference):
        pytest.skip("the reference runtime did not answer every example, so parity cannot be stated")
    answers = next(iter(space_calls["answers"].values()))
    equal = sum(1 for got, ref in zip(answers, mulm_reference, strict=True) if not differences(got, ref.output, rtol=1e-5))
    metrics = [
        {"type": "parity", "name": "examples equal to the reference runtime", "value": round(equal / len(answers), 4)},
        {"type": "latency", "name": "p50 latency through gradio_client (ms)",
         "value": round(statistics.median(space_calls["seconds"]) * 1000, 2)},
    ]
    text = model_card_text(make_environment(mulm_settings.templates_dir), mulm_workflow, names_for(mulm_workflow),
                           docs=mulm_docs, metrics=metrics, verified_by=f"pytest-mulm on {time.strftime('%Y-%m-%d')}")
    problems = card_problems(text, space=False)
    assert not problems, "the verified model card:\n" + "\n".join(problems)
    from huggingface_hub import ModelCard

    results = ModelCard(text, ignore_metadata_errors=False).data.eval_results
    assert [r.metric_value for r in results] == [m["value"] for m in metrics]
    out = mulm_settings.out_dir / "space-runs" / mulm_export.key
    out.mkdir(parents=True, exist_ok=True)
    (out / "MODEL_CARD.md").write_text(text, encoding="utf-8")
    request.node.user_properties.append(("mulm_attachments", {"verified model card": str(out / "MODEL_CARD.md")}))
    assert equal == len(answers), f"{len(answers) - equal} of {len(answers)} examples disagree (card written anyway)"


def test_screenshot(space_app, mulm_export, mulm_settings, request):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium), so no screenshot")
    out = mulm_settings.out_dir / "space-runs" / mulm_export.key
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "screenshot.png"
    shot.unlink(missing_ok=True)
    profile = out / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000"]
    subprocess.run([*common, "--window-size=1280,1100", f"--screenshot={shot}", space_app.url + "/"],
                   capture_output=True, timeout=180, check=False)
    dom = subprocess.run([*common, "--dump-dom", space_app.url + "/"], capture_output=True, text=True, timeout=180,
                         check=False).stdout
    shutil.rmtree(profile, ignore_errors=True)
    assert shot.is_file(), "Chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1100), f"screenshot is {width}x{height}"
    title = _config(mulm_export)["title"]
    # the page is drawn by JavaScript: the rendered DOM must carry the app's own title
    assert title in dom or html.escape(title) in dom, f"the rendered page does not show the title {title!r}"
    request.node.user_properties.append(("mulm_attachments", {"screenshot": str(shot)}))
