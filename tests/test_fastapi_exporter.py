"""The fastapi-service exporter's reading of deploymentConfig (fast; no server)."""

from __future__ import annotations

import json

import pytest

from pytest_mulm.errors import WorkflowError
from pytest_mulm.exporting import export_workflow
from pytest_mulm.loader import parse_workflow


def doc(deployment: dict) -> dict:
    return {
        "id": "svc", "name": "Svc",
        "nodes": [
            {"id": "in", "data": {"type": "input", "config": {"inputType": "tensor", "shape": [2], "examples": [[1, 2]]}}},
            {"id": "out", "data": {"type": "output"}},
        ],
        "edges": [{"id": "e", "source": "in", "target": "out"}],
        "deploymentConfig": deployment,
    }


@pytest.mark.parametrize("deployment, expected", [
    ({"authentication": {"type": "oauth"}}, "deploymentConfig.authentication.type: 'oauth' is not known; valid: api-key, jwt, api-key+jwt, none"),
    ({"rateLimit": {"requests": 0}}, "deploymentConfig.rateLimit.requests: 0; give a whole number of requests, at least 1"),
    ({"rateLimit": {"window": -1}}, "deploymentConfig.rateLimit.window: -1; give the window in seconds, more than 0"),
    ({"rateLimit": {"strategy": "leaky"}}, "deploymentConfig.rateLimit.strategy: 'leaky'; valid: fixed, sliding"),
    ({"kubernetes": {"replicas": "two"}}, "deploymentConfig.kubernetes.replicas: 'two'; give a whole number from 1 to 1000"),
    ({"kubernetes": {"cpuLimit": "lots"}}, "deploymentConfig.kubernetes.cpuLimit: 'lots' is not a Kubernetes quantity such as 250m, 1, 256Mi"),
    ({"kubernetes": {"image": "x\nkind: Secret"}}, "deploymentConfig.kubernetes.image: 'x\\nkind: Secret' is not an image reference such as registry/name:1.0"),
    ({"kubernetes": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "deploymentConfig.kubernetes.autoscaling: minReplicas 5 is above maxReplicas 2"),
])
def test_bad_deployment_config_is_refused_one_line_each(tmp_path, deployment, expected) -> None:
    wf = parse_workflow(doc(deployment))
    with pytest.raises(WorkflowError) as info:
        export_workflow(wf, "fastapi-service", out_dir=tmp_path)
    assert info.value.lines == [expected]
    # the python-package format does not read deploymentConfig and still exports
    export_workflow(wf, "python-package", out_dir=tmp_path)


def test_service_config_is_data(tmp_path) -> None:
    deployment = {"authentication": {"type": "jwt", "roles": ["predict"], "audience": "zq7-marker\"\n{{x}}"},
                  "rateLimit": {"requests": 7, "window": 30, "strategy": "fixed"},
                  "apiConfig": {"cors": {"origins": ["https://example.org"]}, "maxBodyBytes": 2048}}
    result = export_workflow(parse_workflow(doc(deployment)), "fastapi-service", out_dir=tmp_path)
    config = json.loads(next(result.path.glob("src/*_service/service_config.json")).read_text())
    assert config["auth_type"] == "jwt" and config["required_scope"] == "predict"
    assert config["jwt_audience"] == "zq7-marker\"\n{{x}}"
    assert (config["rate_limit"], config["rate_window"], config["rate_strategy"]) == (7, 30.0, "fixed")
    assert config["cors_origins"] == ["https://example.org"] and config["max_body_bytes"] == 2048
    assert config["inputs"] == [{"id": "in", "type": "tensor", "shape": [2], "maxLength": None}]
    for py in result.path.rglob("*.py"):
        assert "zq7-marker" not in py.read_text(), f"{py.name}: workflow strings belong in service_config.json only"
