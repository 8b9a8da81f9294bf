"""Names of a namespace (no broker needed)."""

from __future__ import annotations

from typing import Optional

import pytest

from warren.topology import Names
from warren.worker import task_prefetch


@pytest.mark.parametrize(
    ("reply_to", "key"),
    [
        (None, ""),
        ("ns.results.0", "ns.results.0"),  # a partition queue of this namespace
        ("ns.results.15", "ns.results.15"),
        ("ns.results.", ""),
        ("ns.results.x", ""),
        ("ns.results.123456", ""),  # more digits than a partition has
        ("other.results.3", ""),  # another namespace's
        ("ns.tasks.default", ""),
        ("amq.gen-abc", ""),
    ],
)
def test_a_result_goes_to_the_partition_its_task_names(reply_to: Optional[str], key: str) -> None:
    assert Names("ns").result_route(reply_to) == key


@pytest.mark.parametrize(
    ("concurrency", "queues", "prefetch"),
    [(8, 1, 8), (8, 2, 8), (8, 3, 6), (8, 16, 1), (1, 4, 1), (256, 1, 256)],
)
def test_the_prefetch_is_the_rust_workers(concurrency: int, queues: int, prefetch: int) -> None:
    assert task_prefetch(concurrency, queues) == prefetch


def test_quorum_queues_take_the_schedulers_arguments() -> None:
    assert Names("ns").pool_queue_arguments() == {"x-max-priority": 10}
    assert Names("ns", "quorum").pool_queue_arguments() == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 20,
        "x-dead-letter-exchange": "ns.dead",
    }
    with pytest.raises(ValueError):
        Names("ns", "stream")
