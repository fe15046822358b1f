"""The soak's short form: mixed traffic for a fixed time, no errors, memory flat."""

from __future__ import annotations

import asyncio

import pytest

from bench.soak import soak

pytestmark = pytest.mark.e2e
SECONDS = 30


def test_short_soak_has_no_errors_and_flat_memory(app):
    report = asyncio.run(soak(app.url, seconds=SECONDS, concurrency=8))
    print("\nsoak:", report.summary())
    assert report.errors == []
    assert report.requests > 100
    # Flat: after warm-up the front may settle a little, but must not grow with traffic.
    assert report.memory_end_mib - report.memory_start_mib < 24
