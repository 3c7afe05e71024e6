"""A lease (core): at most one holder at a time per name, on any store that can create a key atomically
(the MLflow model registry: a registered model's name is unique, on sqlite as on a tracking server).

Keys are generations, `<prefix>000000000`, `<prefix>000000001`, ...; the highest key that exists holds
the lease, and its `holder` value names who. Nothing here deletes a key it did not create while that
key could still be the holder's:

- **take**: create the next generation after the highest (or the first when there is none). Of two
  clients creating the same generation one succeeds; a creator then checks that its key is the highest
  (an old generation re-created after a cleanup is not), else it deletes its key and waits again.
- **break** a holder that died: the same create, of the generation after the stale one; the stale key
  is not deleted first, so two breakers cannot both win. Staleness is a duration the waiter observes on
  its own monotonic clock (the same highest key and holder for `stale_s`), not a comparison of one
  machine's wall clock with another's. A waiter gives up after `wait_s`, which must exceed `stale_s`.
- **release**: the holder deletes its own key, only while it is still the highest with its token
  (owner-checked). A holder whose lease was broken finds `check()` failing and releases nothing.
- **cleanup**: a new holder deletes the generations below its own (superseded: their holders'
  `check()` already fails), so the store keeps one key per name while held and none when free.
"""
from __future__ import annotations

import contextlib
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

DIGITS = 9


class Store(Protocol):
    def create(self, key: str, holder: str) -> bool:
        """Creates `key` with `holder` atomically -> False when it exists already."""

    def holders(self, prefix: str) -> dict[str, str]:
        """Every existing key that starts with `prefix` -> its holder."""

    def delete(self, key: str) -> None:
        """Deletes `key`; a key that is gone already is not an error."""


class LeaseLost(RuntimeError):
    """The lease was broken (its holder was taken for dead) before the holder acted on it."""


def _top(holders: dict[str, str]) -> tuple[str, str] | None:
    return max(holders.items()) if holders else None


@dataclass
class Lease:
    store: Store
    prefix: str
    key: str
    token: str

    def held(self) -> bool:
        return _top(self.store.holders(self.prefix)) == (self.key, self.token)

    def check(self) -> None:
        """Call right before acting under the lease (e.g. moving an alias): fails if it was broken."""
        if not self.held():
            raise LeaseLost(f"{self.key} is no longer held by {self.token} (taken for dead and broken)")


def _next(prefix: str, top: tuple[str, str] | None) -> str:
    gen = int(top[0][len(prefix):]) + 1 if top else 0
    return f"{prefix}{gen:0{DIGITS}d}"


def _try_take(store: Store, prefix: str, top: tuple[str, str] | None, token: str) -> str | None:
    """One attempt at the generation after `top` -> its key when this client now holds the lease."""
    key = _next(prefix, top)
    if not store.create(key, token):
        return None                                    # another client took this generation first
    now = store.holders(prefix)
    if _top(now) != (key, token):                      # an older generation, re-created after a cleanup
        store.delete(key)
        return None
    for old in now:
        if old < key:                                  # superseded generations (a broken holder's)
            store.delete(old)
    return key


@contextlib.contextmanager
def lease(store: Store, prefix: str, holder: str, wait_s: float = 1200, stale_s: float = 900,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
          ) -> Iterator[Lease]:
    """Holds the lease on `prefix` for the block -> the Lease (call `check()` before acting).
    Raises TimeoutError after `wait_s` without it."""
    if wait_s <= stale_s:
        raise ValueError(f"wait_s ({wait_s}) must exceed stale_s ({stale_s}): else a dead holder is never broken")
    token, deadline = f"{holder}/{uuid.uuid4().hex[:12]}", clock() + wait_s
    seen, since = None, clock()
    while True:
        top = _top(store.holders(prefix))
        if top != seen:                                # a new holder (or none): observe it from now
            seen, since = top, clock()
        stale = top is not None and clock() - since > stale_s
        if top is None or stale:
            if top is not None:
                warnings.warn(f"breaking {top[0]} held by {top[1]}: unchanged for {clock() - since:.0f} s "
                              "(its holder died?)", stacklevel=3)
            key = _try_take(store, prefix, top, token)
            if key is not None:
                break
            continue                                   # someone else moved first: look again at once
        if clock() > deadline:
            raise TimeoutError(f"{top[0]} is held by {top[1]}; waited {wait_s:.0f} s")
        sleep(0.1 + random.random() * 0.2)
    held = Lease(store, prefix, key, token)
    try:
        yield held
    finally:
        if held.held():                                # owner-checked: a broken lease is its new holder's
            store.delete(key)
