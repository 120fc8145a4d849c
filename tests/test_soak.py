"""The soak benchmark's short version: 20 real Chromium sessions, 4 at a time, against one dashboard server.

Each session uploads its own study (some with a bad file, some outside the model's coverage) and must see
its own result: no error, no other session's files. `benchmarks/soak.py` runs the long versions.
"""

from __future__ import annotations

import pytest

from benchmarks.live_server import CHROMIUM

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.is_file(),
                                                   reason=f"{CHROMIUM} is not installed (apt-get install chromium)")]
pytest.importorskip("playwright.async_api", reason="playwright is not installed")

SESSIONS, CONCURRENCY = 20, 4


def test_soak_short(tmp_path):
    from benchmarks.soak import make_study, run_soak, sample_pictures

    log = tmp_path / "streamlit.log"
    result = run_soak(SESSIONS, CONCURRENCY, max_minutes=30, log=log)
    print("\n" + result.summary())
    assert not result.errors, (result.errors, log.read_text()[-3000:])
    assert not result.mixed_up, result.mixed_up
    assert result.sessions == SESSIONS and len(result.seconds_to_result) == SESSIONS
    assert result.rss_start_mib and result.rss_end_mib  # the server's memory was read
    # The studies really differ between sessions, and some hold a bad file or lie outside the coverage.
    pictures = sample_pictures()
    studies = [make_study(i, pictures) for i in range(SESSIONS)]
    assert len({data for study in studies for _, data in study.files}) == sum(len(s.files) for s in studies)
    assert sum(bool(s.bad) for s in studies) >= 5 and any("HUMERUS" in s.names[0] for s in studies)
