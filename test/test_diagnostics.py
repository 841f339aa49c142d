"""NodeStats: counters added to from several threads, under its lock."""
import threading

import pytest

from da3_ros.ros.diagnostics import COUNTERS, NodeStats


def test_counts_from_many_threads_are_exact():
    stats = NodeStats(["a"])
    n_threads, n_each = 8, 20000

    def hammer():
        for _ in range(n_each):
            stats.count("bad_input")
            stats.count("errors", 2)

    threads = [threading.Thread(target=hammer) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = stats.summary()
    assert summary["bad_input"] == n_threads * n_each and summary["errors"] == 2 * n_threads * n_each


def test_every_counter_is_reported_and_unknown_names_are_refused():
    stats = NodeStats(["a"])
    for name in COUNTERS:
        stats.count(name)
    assert all(stats.summary()[name] == 1 for name in COUNTERS)
    with pytest.raises(ValueError, match="no counter 'bad_inputs'"):
        stats.count("bad_inputs")
