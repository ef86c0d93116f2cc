"""Shared fixtures for the micro benchmarks.

Run them with ``.venv/bin/pytest benchmarks/<file> --benchmark-enable -q``; the project's
default options disable timing so that a plain test run only checks they work.
"""

from __future__ import annotations

import pytest

from sagamesh.events import SagaEvent
from sagamesh.testing.samples import SAMPLES


@pytest.fixture(params=list(SAMPLES), ids=list(SAMPLES))
def sample_name(request: pytest.FixtureRequest) -> str:
    """Each sample size: small, typical (~530 B as JSON), large (~10 KB)."""
    name: str = request.param
    return name


@pytest.fixture
def sample_event(sample_name: str) -> SagaEvent:
    """The deterministic sample event of that size."""
    return SAMPLES[sample_name]()
