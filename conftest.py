"""Test-suite configuration for pytest-mulm's own tests."""

# pytester runs inner pytest sessions in this process and restores sys.modules after
# each one; numpy refuses to be imported twice in one process, so import it (and the
# modules that import it) once here, outside any inner session.
import numpy  # noqa: F401

import pytest_mulm.exporting  # noqa: F401
import pytest_mulm.loader  # noqa: F401
import pytest_mulm.runtime  # noqa: F401

pytest_plugins = ["pytester"]

from pathlib import Path  # noqa: E402  (after the imports above, which must come first)
from typing import Any  # noqa: E402

import pytest  # noqa: E402

ADVISORIES = Path(__file__).resolve().parent / "tests" / "data" / "advisories"
# the security items allowed to skip in the end-to-end tests, and the reason each must give
SECURITY_SKIPS = {
    "test_dependency_audit_online": "pip-audit not run: PyPI's JSON API",  # 404 behind this machine's mirror
    "test_safety": "safety is off",
}


class SecurityRun:
    """What an end-to-end test passes so every security item can run, and how it checks them."""

    items = 7  # the security suite's items per format
    args = (f"--mulm-advisories={ADVISORIES}", "--mulm-advisories-max-age=100000")  # the test snapshot is of 2024

    @staticmethod
    def is_security(check: dict[str, Any]) -> bool:
        return check["nodeid"].startswith("mulm/security::")

    def check(self, report: dict[str, Any], fmt: str) -> None:
        """Every security item of ``fmt`` passed, or skipped for an allowed reason; the gate passed."""
        found = [c for c in report["formats"][fmt]["checks"] if self.is_security(c)]
        assert len(found) == self.items, found
        for check in found:
            if check["outcome"] == "skipped":
                reason = SECURITY_SKIPS.get(check["check"])
                assert reason and reason in check["message"], check
            else:
                assert check["outcome"] == "passed", check
        assert report["gates"]["security"]["outcome"] == "passed", report["gates"]["security"]


@pytest.fixture
def mulm_security(monkeypatch: pytest.MonkeyPatch) -> SecurityRun:
    """For pytester runs of the suites: ``.args`` turn the offline audit on; a configured
    JWT secret gives the leak check a value to look for; ``.check(report, fmt)``."""
    monkeypatch.setenv("MULM_JWT_SECRET", "e2e-jwt-secret-value-0123456789")
    return SecurityRun()
