"""Verification suites: ordinary pytest modules collected when --mulm-workflow is given."""
