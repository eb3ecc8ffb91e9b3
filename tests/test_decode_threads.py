"""The CPU decode thread count follows the measured step times."""

import torch

from starcli.star.decode_threads import ThreadChooser, tuned_decode_threads


def run(chooser: ThreadChooser, seconds_by_threads: dict[int, float], steps: int) -> list[int]:
    chosen, last = [], None
    for _ in range(steps):
        threads = chooser.next(last)
        chosen.append(threads)
        last = seconds_by_threads[threads]
    return chosen


def test_a_trial_tries_both_counts_then_keeps_the_faster():
    slow_with_two = run(ThreadChooser(2, trial_steps=2, between_trials=4), {2: 0.9, 1: 0.3}, 12)
    assert slow_with_two == [2, 2, 1, 1, 1, 1, 1, 1, 2, 2, 1, 1]
    fast_with_two = run(ThreadChooser(2, trial_steps=2, between_trials=4), {2: 0.1, 1: 0.3}, 8)
    assert fast_with_two == [2, 2, 1, 1, 2, 2, 2, 2]


def test_the_first_step_after_a_switch_is_not_timed():
    chooser = ThreadChooser(2, trial_steps=2, between_trials=4)
    # 1 thread: its first (untimed) step is very slow, its second fast; 2 threads always medium
    times = iter([0.5, 0.5, 9.0, 0.2])
    chosen, last = [], None
    for _ in range(5):
        chosen.append(chooser.next(last))
        last = next(times, None)
    assert chooser.best == 1 and chosen[-1] == 1


def test_threads_are_restored_and_callbacks_still_stop(monkeypatch):
    before = torch.get_num_threads()
    seen = []
    with tuned_decode_threads(torch.device("cpu"), lambda token: seen.append(token) or token == 3) as on_token:
        results = [on_token(t) for t in range(4)]
    assert seen == [0, 1, 2, 3] and results == [False, False, False, True]
    assert torch.get_num_threads() == before


def test_nothing_changes_on_one_thread_or_other_devices(monkeypatch):
    callback = lambda token: False  # noqa: E731
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    with tuned_decode_threads(torch.device("cpu"), callback) as on_token:
        assert on_token is callback
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    with tuned_decode_threads(torch.device("meta"), callback) as on_token:
        assert on_token is callback
