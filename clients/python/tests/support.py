"""What the integration tests share: the broker address, the Warren binaries
(``WARREN_BIN_DIR``, default ``<repo>/target/debug``), a scheduler started per
test on a namespace of its own, workers run in a thread or a process, waits
on conditions with deadlines, and the clean-up of everything a test declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import aio_pika
import aio_pika.exceptions

import warren

REPO = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parent
AMQP_URL = os.environ.get("WARREN_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f")
BIN_DIR = Path(os.environ.get("WARREN_BIN_DIR", REPO / "target" / "debug"))

T = TypeVar("T")


def binary(name: str) -> str:
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: build it (cargo build --workspace --bins) or set WARREN_BIN_DIR"
        )
    return str(path)


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = 30.0) -> T:
    """Polls ``check`` until it returns something other than None or False,
    and returns it; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            v = check()
            if v is not None and v is not False:
                return v
        except Exception as e:  # a check that fails for now (not declared yet, ...)
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def new_namespace() -> str:
    return f"pytest-{uuid.uuid4().hex[:10]}"


async def _queue_state(name: str) -> tuple[int, int]:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(name, passive=True)
        res = q.declaration_result
        return res.message_count or 0, res.consumer_count or 0
    finally:
        await conn.close()


def queue_state(name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue; raises if it does not exist."""
    return asyncio.run(_queue_state(name))


async def _delete(namespace: str, queues: list[str]) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        names = [f"{namespace}.{n}" for n in ("workflows", "workflows.control", "results", "dead")]
        for q in queues:
            names += [f"{namespace}.tasks.{q}", f"{namespace}.suspect.{q}"]
        for name in names:
            ch = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.queue_delete(name)
        for ex in ("workflows", "tasks", "results", "events", "control", "dead", "requeue"):
            ch = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.exchange_delete(f"{namespace}.{ex}")
    finally:
        await conn.close()


class Deployment:
    """A scheduler on its own namespace and SQLite store, and the processes a
    test starts beside it; :meth:`close` stops them and deletes what the
    namespace declared."""

    def __init__(self, tmp: Path, scheduler: bool = True) -> None:
        self.namespace = new_namespace()
        self.tmp = tmp
        self.queues: set[str] = {"default"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = dict(
            os.environ,
            AMQP_ADDR=AMQP_URL,
            WARREN_NAMESPACE=self.namespace,
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        if scheduler:
            self.start_scheduler()

    def start_scheduler(self) -> None:
        self.scheduler = self.spawn(
            [binary("warren-scheduler"), "--store", str(self.tmp / "warren.db")], "scheduler"
        )
        wait_for(
            "the scheduler to consume its requests",
            lambda: queue_state(f"{self.namespace}.workflows")[1] > 0,
        )

    def spawn(
        self, argv: list[str], name: str, env: Optional[dict[str, str]] = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen(
            argv,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(TESTS),
        )
        self.procs.append(p)
        return p

    def rust_worker(
        self, queue: str = "default", worker_id: str = "rust-1"
    ) -> subprocess.Popen[bytes]:
        self.queues.add(queue)
        return self.spawn(
            [
                binary("warren-worker"),
                "--queue",
                queue,
                "--worker-id",
                worker_id,
                "--heartbeat-ms",
                "500",
            ],
            f"rust-worker-{worker_id}",
        )

    def python_worker(
        self, queue: str = "python", worker_id: str = "py-proc", **env: str
    ) -> subprocess.Popen[bytes]:
        """``python -m warren worker app:worker`` (tests/app.py) as a process."""
        self.queues.add(queue)
        e = {"APP_QUEUE": queue, "APP_WORKER_ID": worker_id, **env}
        return self.spawn(
            [sys.executable, "-m", "warren", "worker", "app:worker"], f"py-worker-{worker_id}", e
        )

    def client(self) -> warren.Client:
        return warren.Client(url=AMQP_URL, namespace=self.namespace)

    def worker(self, queue: str = "python", **kw: Any) -> warren.Worker:
        self.queues.add(queue)
        kw.setdefault("heartbeat_interval", 0.5)
        return warren.Worker(url=AMQP_URL, namespace=self.namespace, queues=[queue], **kw)

    def log(self, name_prefix: str) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.tmp.glob(f"{name_prefix}*.log"))
        )

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        asyncio.run(_delete(self.namespace, sorted(self.queues)))


@contextlib.contextmanager
def running(worker: warren.Worker) -> Iterator[warren.Worker]:
    """Serves ``worker`` in a thread of this process for the block's time,
    then drains it (and re-raises what its thread raised)."""
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(worker.serve())
        except BaseException as e:
            failed.append(e)

    t = threading.Thread(target=serve, name="test-worker", daemon=True)
    t.start()
    wait_for(
        "the worker to consume",
        lambda: (
            any(queue_state(worker.names.task_queue(q))[1] > 0 for q in worker.queues)
            or bool(failed)
        ),
    )
    try:
        yield worker
    finally:
        worker.stop()
        t.join(timeout=60)
        assert not t.is_alive(), "the worker did not stop"
        if failed:
            raise failed[0]
