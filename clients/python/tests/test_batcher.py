"""Results batched only while messages of results await their confirm (no
broker needed: the publish is a stand-in whose confirms the test gives)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiormq import spec

from warren.batcher import Batcher


class Broker:
    """Records what is published; each publish waits for its confirm."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str | None]] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def publish(self, key: str, body: bytes, props: spec.Basic.Properties) -> None:
        self.sent.append((key, body, props.message_type))
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.append(f)
        await f


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_results_go_alone_until_two_messages_await_their_confirm_then_together() -> None:
    async def main() -> None:
        broker = Broker()
        b = Batcher(broker.publish, count=3, max_bytes=1000)
        sends = [
            asyncio.ensure_future(b.send(key, json.dumps({"n": i}).encode(), f"m{i}"))
            for i, key in enumerate(["", "", "", "", "p.1", "", ""])
        ]
        await settle()
        # Two alone, at once; the rest wait for a confirm.
        assert [(k, t) for k, _, t in broker.sent] == [("", "warren.result")] * 2
        broker.confirms[0].set_result(None)
        await settle()
        assert sends[0].done() and not sends[1].done()
        # The next message takes the queued results of the first one's key,
        # at most `count`: m2, m3, m5 (m4 has another key).
        assert broker.sent[2] == ("", b'[{"n": 2},{"n": 3},{"n": 5}]', "warren.results")
        broker.confirms[1].set_result(None)
        await settle()
        assert broker.sent[3] == ("p.1", b'{"n": 4}', "warren.result")
        broker.confirms[2].set_result(None)
        broker.confirms[3].set_result(None)
        await settle()
        assert broker.sent[4] == ("", b'{"n": 6}', "warren.result")
        broker.confirms[4].set_result(None)
        await asyncio.gather(*sends)

    asyncio.run(main())


def test_a_refused_message_fails_every_result_it_carried() -> None:
    async def main() -> None:
        broker = Broker()
        b = Batcher(broker.publish, count=10, max_bytes=20)
        sends = [asyncio.ensure_future(b.send("", b'{"n":%d}' % i, f"m{i}")) for i in range(5)]
        await settle()
        broker.confirms[0].set_result(None)
        await settle()
        # The byte bound: `[` + two bodies of 7 and a comma + `]` fit 20.
        assert broker.sent[2][1] == b'[{"n":2},{"n":3}]'
        broker.confirms[2].set_exception(RuntimeError("nack"))
        await settle()
        for i in (2, 3):
            with pytest.raises(RuntimeError, match="nack"):
                await sends[i]
        broker.confirms[1].set_result(None)
        await settle()
        broker.confirms[3].set_result(None)
        await asyncio.gather(sends[0], sends[1], sends[4])

    asyncio.run(main())
