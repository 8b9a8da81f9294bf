"""The coalescing of acks (no broker needed): a multiple ack only up to a
tag below which everything is settled, the rest one by one at once."""

from __future__ import annotations

from typing import Optional

import pytest

from warren.settler import Ledger


def check(
    settled_before: list[int],
    rejected: list[int],
    burst: set[int],
    multiple: Optional[int],
    single: list[int],
) -> Ledger:
    ledger = Ledger()
    if settled_before:
        ledger.plan(set(settled_before))
    for t in rejected:
        ledger.settled(t)
    assert ledger.plan(burst) == (multiple, single)
    return ledger


@pytest.mark.parametrize(
    ("before", "rejected", "burst", "multiple", "single"),
    [
        ([], [], {1, 2, 3}, 3, []),  # a contiguous run from the first: one ack
        ([], [], {2, 3}, None, [2, 3]),  # 1 still running: nothing multiple
        ([1], [], {2, 4}, 2, [4]),  # 3 running: 4 alone
        ([], [1], {2, 3}, 3, []),  # a rejected tag counts as settled
        ([2, 3], [], {1}, 1, []),  # 2 and 3 were acked singly: not again
    ],
)
def test_plans(
    before: list[int],
    rejected: list[int],
    burst: set[int],
    multiple: Optional[int],
    single: list[int],
) -> None:
    check(before, rejected, burst, multiple, single)


def test_the_floor_moves_past_everything_settled() -> None:
    ledger = check([2, 3], [], {1}, 1, [])
    assert ledger.floor == 4 and ledger.above == set()
