"""bench/scale.py: the pieces that turn the store and the server's counters into its figures."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import scale  # noqa: E402


def _trial(number, worker, end_s, seconds, state="COMPLETE"):
    t0 = datetime.datetime(2026, 1, 1)
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), datetime_complete=t0 + datetime.timedelta(seconds=end_s),
                           user_attrs={"worker": worker, "seconds": seconds})


def test_orchestration_is_each_workers_cycle_less_its_training():
    trials = [
        _trial(0, "a", 1.0, 0.5), _trial(1, "b", 1.2, 0.5),  # first trial of each worker: no cycle
        _trial(2, "a", 1.8, 0.6),  # a: 0.8 s cycle, 0.6 s training -> 0.2 s
        _trial(3, "b", 2.0, 0.5),  # b: 0.8 s cycle -> 0.3 s
        _trial(4, "a", 2.1, 0.0, state="FAIL"),  # not COMPLETE: no figure, but the next cycle starts at its end
        _trial(5, "a", 2.5, 0.3),  # a: 0.4 s cycle -> 0.1 s
    ]
    got = scale.orchestration_per_trial(trials)
    assert set(got) == {2, 3, 5}
    assert abs(got[2] - 0.2) < 1e-9 and abs(got[3] - 0.3) < 1e-9 and abs(got[5] - 0.1) < 1e-9


def test_window_load_is_the_counters_difference_per_trial_between_the_bracketing_samples():
    s = [{"t": 0.0, "finished": 0, "xacts": 0, "rows_returned": 0, "rows_fetched": 0, "rows_written": 0, "server_cpu_s": 0.0},
         {"t": 10.0, "finished": 90, "xacts": 900, "rows_returned": 9000, "rows_fetched": 90, "rows_written": 180, "server_cpu_s": 0.9},
         {"t": 12.0, "finished": 110, "xacts": 1300, "rows_returned": 13000, "rows_fetched": 110, "rows_written": 220, "server_cpu_s": 1.1},
         {"t": 20.0, "finished": 200, "xacts": 2000, "rows_returned": 40000, "rows_fetched": 200, "rows_written": 400, "server_cpu_s": 2.0}]
    first = scale.window_load(s, 0, 100)  # from the last sample at <= 0 to the first at >= 100
    assert first["trials"] == 110 and first["seconds"] == 12.0
    assert first["xacts_per_trial"] == round(1300 / 110, 1) and first["server_cpu_ms_per_trial"] == 10.0
    last = scale.window_load(s, 100, 200)  # from the last at <= 100 (90) to 200
    assert last["trials"] == 110 and last["rows_returned_per_trial"] == round(31000 / 110, 1)
    assert scale.window_load(s, 0, 500) is None  # never reached: no figure rather than a wrong one
