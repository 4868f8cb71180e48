"""DDR data removal: forgetting events, least-forgotten selection, schedule, removal at epochs."""

from __future__ import annotations

import numpy as np
import pytest

from clients.errors import InputError
from clients.sparcl.ddr import DataRemoval, DDRConfig, ForgettingTracker, removal_schedule, select_removals

# rows: presentations; columns: examples; 1 = classified correctly
SEQUENCE = np.array([
    # ex0 ex1 ex2 ex3 ex4 ex5
    [1, 0, 0, 1, 1, 1],
    [0, 1, 0, 1, 0, 1],
    [1, 1, 0, 1, 0, 1],
    [0, 1, 0, 0, 1, 1],
    [1, 1, 0, 1, 0, 1],
])
# ex0: R W R W R -> 2 events; ex1: W R R R R -> 0 (wrong->right is no event);
# ex2: never right -> the maximum; ex3: R R R W R -> 1; ex4: R W W R W -> 2; ex5: never wrong -> 0
EVENTS = [2, 0, None, 1, 2, 0]


def replay(tracker: ForgettingTracker, seq: np.ndarray, order_seed: int | None = None) -> None:
    """Present every example once per row, in shuffled batches, as the learner does."""
    rng = np.random.default_rng(order_seed)
    for row in seq:
        idx = np.arange(seq.shape[1]) if order_seed is None else rng.permutation(seq.shape[1])
        for chunk in np.array_split(idx, 2):
            tracker.record(chunk, row[chunk].astype(bool))


def test_forgetting_events_on_hand_sequence():
    t = ForgettingTracker(6)
    replay(t, SEQUENCE)
    counts = t.counts()
    learned = [i for i, e in enumerate(EVENTS) if e is not None]
    assert [int(counts[i]) for i in learned] == [EVENTS[i] for i in learned]
    # never learned counts as more than any example could score in 5 presentations (at most 2 events)
    assert counts[2] > 2
    assert counts[2] > counts[learned].max()
    assert t.events.tolist() == [2, 0, 0, 1, 2, 0]
    assert t.presentations.tolist() == [5] * 6


def test_forgetting_counts_do_not_depend_on_batch_order():
    a, b = ForgettingTracker(6), ForgettingTracker(6)
    replay(a, SEQUENCE)
    replay(b, SEQUENCE, order_seed=7)
    assert a.counts().tolist() == b.counts().tolist()


def test_unseen_examples_count_as_maximum_and_reset_clears():
    t = ForgettingTracker(4)
    t.record(np.array([0, 1]), np.array([True, True]))
    t.record(np.array([0, 1]), np.array([False, True]))
    c = t.counts()
    assert c[0] == 1 and c[1] == 0
    assert c[2] > 1 and c[3] > 1  # never presented: never learned
    t.reset()
    assert t.events.tolist() == [0, 0, 0, 0]
    assert not t.learned.any()
    assert t.presentations.tolist() == [0, 0, 0, 0]
    assert t.last.tolist() == [-1, -1, -1, -1]
    # after a reset the first presentation cannot be a forgetting event
    t.record(np.array([0]), np.array([False]))
    assert t.events[0] == 0


def test_select_removals_removes_exactly_the_least_forgotten_active():
    counts = np.array([3, 0, 5, 1, 0, 2, 4])
    active = np.array([0, 1, 2, 3, 5, 6])  # example 4 already removed
    gone = select_removals(counts, active, 3, np.random.default_rng(0))
    assert gone.tolist() == [1, 3, 5]
    assert select_removals(counts, active, 0, np.random.default_rng(0)).size == 0


def test_select_removals_breaks_ties_inside_the_tie_set_only():
    counts = np.array([1, 0, 1, 1, 0, 9, 1])
    active = np.arange(7)
    seen = set()
    for seed in range(30):
        gone = select_removals(counts, active, 3, np.random.default_rng(seed))
        assert len(gone) == 3 and len(set(gone.tolist())) == 3
        assert {1, 4} <= set(gone.tolist())            # the two zeros always go
        third = (set(gone.tolist()) - {1, 4}).pop()
        assert third in {0, 2, 3, 6}                   # one of the count-1 ties
        seen.add(third)
    assert len(seen) > 1  # ties are broken at random, not by position


def test_removal_schedule_at_50_epochs():
    s = removal_schedule(50, DDRConfig())
    assert set(s) == {5, 10, 15, 20}
    for e in (5, 10, 15, 20):
        assert s[e] == pytest.approx(0.075)


@pytest.mark.parametrize("epochs", [2, 5, 10, 20, 50])
def test_removal_schedule_total_share_is_30_percent(epochs):
    s = removal_schedule(epochs, DDRConfig())
    assert sum(s.values()) == pytest.approx(0.30)
    assert all(1 <= e < epochs for e in s)


def test_removal_schedule_at_5_and_20_epochs():
    s5 = removal_schedule(5, DDRConfig())
    assert set(s5) == {1, 2}
    assert s5[1] == pytest.approx(0.15) and s5[2] == pytest.approx(0.15)
    s20 = removal_schedule(20, DDRConfig())
    assert set(s20) == {2, 4, 6, 8}
    assert removal_schedule(1, DDRConfig()) == {}  # no statistics before one epoch


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("epochs", [5, 10, 20, 50])
def test_every_removal_waits_for_k_epochs_of_statistics(epochs, k):
    """Statistics restart at each removal, so consecutive removal epochs lie at least k apart
    (and the first k after the task's start); a removal that would not fit is skipped."""
    s = removal_schedule(epochs, DDRConfig(presentations=k))
    starts = [0, *sorted(s)]
    assert all(b - a >= k for a, b in zip(starts, starts[1:]))
    assert all(e < epochs for e in s) and all(v == pytest.approx(0.075) for v in s.values())
    assert sum(s.values()) <= 0.30 + 1e-9


def test_presentations_move_removals_later_at_10_epochs_and_change_nothing_at_50():
    assert removal_schedule(10, DDRConfig(presentations=2)) == pytest.approx({2: 0.075, 4: 0.075, 6: 0.075, 8: 0.075})
    assert removal_schedule(10, DDRConfig(presentations=3)) == pytest.approx({3: 0.075, 6: 0.075, 9: 0.075})
    assert removal_schedule(5, DDRConfig(presentations=5)) == {}  # no room for even one
    for k in (2, 3, 5):  # the reference's points already lie 5 epochs apart at 50
        assert removal_schedule(50, DDRConfig(presentations=k)) == removal_schedule(50, DDRConfig())


def test_ddr_config_rejects_bad_values():
    with pytest.raises(InputError):
        DDRConfig(points=(0.0, 0.5))
    with pytest.raises(InputError):
        DDRConfig(points=(0.5, 1.0))
    with pytest.raises(InputError):
        DDRConfig(fraction=0.25)  # 4 x 0.25 = the whole task
    with pytest.raises(InputError, match="ddr rank 'easy' is unknown"):
        DDRConfig(rank="easy")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="presentations"):
            DDRConfig(presentations=bad)


def make_removal(n: int = 40, epochs: int = 20) -> DataRemoval:
    return DataRemoval(n, epochs, DDRConfig(), np.random.default_rng(0))


def test_begin_epoch_removes_exact_count_of_least_forgotten_at_scheduled_epochs():
    n = 40
    r = make_removal(n)  # schedule {2, 4, 6, 8}, 0.075 x 40 = 3 each
    assert sorted(r.schedule) == [2, 4, 6, 8]
    for epoch in (0, 1):
        assert r.begin_epoch(epoch).size == 0
    assert r.active.tolist() == list(range(n))
    # every example learned with 2 events except 7, 11, 30 (0 events)
    idx = np.arange(n)
    easy = np.array([7, 11, 30])
    right = np.ones(n, dtype=bool)
    wrong = right.copy()
    wrong[np.setdiff1d(idx, easy)] = False
    for row in (right, wrong, right, wrong, right):
        r.tracker.record(idx, row)
    assert r.tracker.counts()[easy].tolist() == [0, 0, 0]
    gone = r.begin_epoch(2)
    assert gone.tolist() == [7, 11, 30]
    assert r.active.tolist() == np.setdiff1d(idx, easy).tolist()
    assert len(r.removed) == 1
    # statistics restart after a removal
    assert r.tracker.presentations.sum() == 0 and r.tracker.events.sum() == 0
    assert r.begin_epoch(3).size == 0
    assert r.active.size == n - 3


def test_random_rank_removes_as_many_examples_regardless_of_their_statistics():
    """The control: same schedule and count, a uniform draw over the active examples."""
    n, easy = 400, np.arange(30)
    hits = np.zeros(n, dtype=bool)
    hits[easy] = True  # only these are ever right: the forgetting rank removes exactly them
    removed = {}
    for rank in ("forgetting", "random"):
        r = DataRemoval(n, 20, DDRConfig(rank=rank), np.random.default_rng(0))
        r.tracker.record(np.arange(n), hits)
        removed[rank] = r.begin_epoch(2)
    assert removed["forgetting"].tolist() == easy.tolist()
    assert removed["random"].size == easy.size
    assert np.isin(removed["random"], easy).sum() < 10  # 30 of 400 drawn: about 2 of the easy 30 expected
    r = DataRemoval(n, 20, DDRConfig(rank="random"), np.random.default_rng(0))
    assert r.begin_epoch(2).tolist() == removed["random"].tolist()  # seeded by the learner's generator


def test_begin_epoch_total_removed_follows_schedule():
    for n, epochs in ((40, 20), (40, 5), (100, 50), (37, 10)):
        r = make_removal(n, epochs)
        removed = 0
        for epoch in range(epochs):
            gone = r.begin_epoch(epoch)
            share = r.schedule.get(epoch, 0.0)
            assert gone.size == int(round(share * n)), (n, epochs, epoch)
            assert not np.isin(gone, r.active).any()
            removed += gone.size
            # one pass of statistics so the next removal has something to go on
            r.tracker.record(r.active, np.ones(r.active.size, dtype=bool))
        assert removed == sum(int(round(s * n)) for s in r.schedule.values())
        assert r.active.size == n - removed
    r = make_removal(40, 20)
    assert sum(r.begin_epoch(e).size for e in range(20)) == 12


def test_begin_epoch_never_removes_already_removed_examples():
    r = make_removal(40, 20)
    r.begin_epoch(2)
    first = r.removed[0]
    # give the removed examples the fewest events (0) and every active one a single event
    idx = np.arange(40)
    r.tracker.record(idx, np.ones(40, dtype=bool))
    second = np.ones(40, dtype=bool)
    second[r.active] = False
    r.tracker.record(idx, second)
    assert r.tracker.counts()[first].tolist() == [0, 0, 0]
    gone = r.begin_epoch(4)
    assert gone.size == 3
    assert not np.isin(gone, first).any()
    assert r.active.size == 34
