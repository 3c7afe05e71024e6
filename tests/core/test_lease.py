"""pipeline/core/lease.py on an in-memory store with a scripted clock: one holder at a time, a dead
holder broken only after stale_s observed, two breakers cannot both win, a broken holder can neither
act nor release its successor. (On the MLflow registry, sqlite and PostgreSQL: tests/deploy/test_scale_out.py.)"""
import pytest

from pipeline.core import lease as lease_module
from pipeline.core.lease import LeaseLost, lease


class Memory:
    def __init__(self):
        self.keys: dict[str, str] = {}

    def create(self, key, holder):
        if key in self.keys:
            return False
        self.keys[key] = holder
        return True

    def holders(self, prefix):
        return {k: v for k, v in self.keys.items() if k.startswith(prefix)}

    def delete(self, key):
        self.keys.pop(key, None)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def _key(gen: int) -> str:
    return f"m.{gen:09d}"


class Busy(Memory):
    """Other clients take the lease in turn, each for less than stale_s: it is never free, never stale."""

    turn = 0

    def holders(self, prefix):
        self.turn += 1
        self.keys = {_key(self.turn): f"other/{self.turn}"}
        return dict(self.keys)


def test_a_lease_is_held_once_released_to_the_next_and_a_waiter_gives_up_after_wait_s():
    store, clock = Memory(), Clock()
    with lease(store, "m.", "a", clock=clock, sleep=clock.sleep) as a:
        assert a.held() and list(store.keys) == [_key(0)]
        assert lease_module._try_take(store, "m.", None, "b/1") is None   # the same generation: taken
    assert store.keys == {}                                    # released: nothing left in the registry
    with lease(store, "m.", "b", clock=clock, sleep=clock.sleep) as b:
        assert b.key == _key(0) and b.held()
    start = clock()
    with pytest.raises(TimeoutError, match="held by other/"), \
            lease(Busy(), "m.", "c", wait_s=5, stale_s=4, clock=clock, sleep=clock.sleep):
        pass
    assert 5 < clock() - start < 6


def test_a_dead_holder_is_broken_after_stale_s_observed_and_never_before():
    store, clock = Memory(), Clock()
    store.create(_key(7), "killed/1")
    start = clock()
    with pytest.warns(UserWarning, match="breaking m.000000007 held by killed/1"), \
            lease(store, "m.", "b", wait_s=20, stale_s=10, clock=clock, sleep=clock.sleep) as b:
        assert clock() - start > 10                            # it watched the same holder for stale_s
        assert b.key == _key(8) and list(store.keys) == [_key(8)]   # the superseded key cleaned up
    with pytest.raises(ValueError, match="must exceed"), lease(store, "m.", "c", wait_s=10, stale_s=10):
        pass


def test_two_breakers_of_one_stale_lease_cannot_both_win():
    store = Memory()
    store.create(_key(3), "killed/1")
    stale = (_key(3), "killed/1")                              # what both waiters saw
    assert lease_module._try_take(store, "m.", stale, "a/1") == _key(4)
    assert lease_module._try_take(store, "m.", stale, "b/1") is None
    assert store.keys == {_key(4): "a/1"}


def test_an_old_generation_recreated_after_a_cleanup_does_not_hold():
    store = Memory()
    store.create(_key(5), "a/1")                               # the holder; 3 and 4 were cleaned up
    assert lease_module._try_take(store, "m.", (_key(3), "dead/1"), "slow/1") is None
    assert store.keys == {_key(5): "a/1"}                      # its create of 4 was undone


def test_a_broken_holder_cannot_act_and_does_not_release_its_successor():
    store, clock = Memory(), Clock()
    with lease(store, "m.", "slow", clock=clock, sleep=clock.sleep) as slow:
        # while "slow" re-scores for longer than stale_s, another client takes it for dead
        with pytest.warns(UserWarning), \
                lease(store, "m.", "next", wait_s=20, stale_s=10, clock=clock, sleep=clock.sleep) as successor:
            with pytest.raises(LeaseLost):
                slow.check()
            successor.check()
            held_by_successor = dict(store.keys)
        assert store.keys == {}
        store.keys.update(held_by_successor)                   # say the successor still held it ...
    assert store.keys == held_by_successor                     # ... slow's exit did not delete it
