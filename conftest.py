"""Test-suite configuration for pytest-mulm's own tests."""

# pytester runs inner pytest sessions in this process and restores sys.modules after
# each one; numpy refuses to be imported twice in one process, so import it (and the
# modules that import it) once here, outside any inner session.
import numpy  # noqa: F401

import pytest_mulm.exporting  # noqa: F401
import pytest_mulm.loader  # noqa: F401
import pytest_mulm.runtime  # noqa: F401

pytest_plugins = ["pytester"]
