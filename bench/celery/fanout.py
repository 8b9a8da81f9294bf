"""Celery doing Warren's fan-out 1 -> N -> 1, for comparison with
``warren-bench python-worker`` on the same machine (docs/benchmarks.md,
"Against Celery on the same machine").

    python bench/celery/fanout.py --pool prefork --concurrency 2
    python bench/celery/fanout.py --pool threads --concurrency 256

What runs: ``chain(first.s(), chord([noop.s()] * N, done.s()))``: a first
task, then N independent no-op tasks, then one task after all of them.
RabbitMQ is the broker (AMQP_ADDR, default the local one), Redis the result
backend (REDIS_URL, default redis://127.0.0.1:6379/0; a chord needs one).
Messages are persistent and their queue durable (Celery's defaults), tasks
are acked after they ran (``task_acks_late=True``, Warren acks after the
result is confirmed), and the worker's prefetch is --prefetch (default 256,
the prefetch of Warren's worker in the bench) spread over its pool:
``worker_prefetch_multiplier = prefetch / concurrency`` (at least 1).
Publisher confirms are off (Celery's default); --confirm turns them on.

The script starts one worker (``celery worker``, no mingle, gossip,
heartbeat or remote control) as a child process on a queue and exchange of
its own, runs a warm-up chord of 20 tasks, reads the CPU (utime + stime
from /proc) of the worker and all its descendants (the prefork pool's
processes), of the broker (beam.smp) and of redis-server, then submits the
chain and waits for its result. It reports tasks/s over the N + 2 tasks
from the chain's publish to the moment the final task finished (its own
time.time(), same machine) and to the moment the client had the result, and
CPU per 1,000 tasks. Then it stops the worker and deletes its queue,
exchange and Redis keys. One JSON line goes to stdout (and --json FILE
appends it there).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid

from celery import Celery, chain, chord

RUN_ID = os.environ.get("CELERYBENCH_RUN_ID") or uuid.uuid4().hex[:12]
QUEUE = f"celerybench-{RUN_ID}"
KEY_PREFIX = f"celerybench-{RUN_ID}-"
AMQP_ADDR = os.environ.get("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("CELERYBENCH_CONCURRENCY", "2"))
PREFETCH = int(os.environ.get("CELERYBENCH_PREFETCH", "256"))
CONFIRM = os.environ.get("CELERYBENCH_CONFIRM", "0") == "1"

app = Celery("fanout", broker=AMQP_ADDR, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_default_delivery_mode="persistent",
    task_acks_late=True,
    worker_prefetch_multiplier=max(1, PREFETCH // CONCURRENCY),
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    result_backend_transport_options={"global_keyprefix": KEY_PREFIX},
    result_expires=3600,
    broker_transport_options={"confirm_publish": CONFIRM},
    broker_connection_retry_on_startup=True,
)


@app.task(name="fanout.first")
def first() -> None:
    return None


@app.task(name="fanout.noop")
def noop(_previous: object = None) -> None:
    return None


@app.task(name="fanout.done")
def done(_results: object) -> float:
    return time.time()


def cpu_secs(pid: int) -> float:
    """utime + stime of a process, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """pid and every process under it, from /proc/*/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def pids_named(name: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == name:
                        out.append(int(d))
            except OSError:
                pass
    return out


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def fanout(n: int) -> object:
    return chain(first.s(), chord([noop.s() for _ in range(n)], done.s()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", default="prefork", help="prefork, threads or gevent")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=256,
                    help="messages in flight per worker (default 256)")
    ap.add_argument("-n", "--tasks", type=int, default=10_000, help="fan-out width")
    ap.add_argument("--confirm", action="store_true", help="publisher confirms on")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="append the result line to this file")
    a = ap.parse_args()

    env = dict(os.environ, CELERYBENCH_RUN_ID=RUN_ID,
               CELERYBENCH_CONCURRENCY=str(a.concurrency),
               CELERYBENCH_PREFETCH=str(a.prefetch),
               CELERYBENCH_CONFIRM="1" if a.confirm else "0")
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    # Our own app object must carry the same settings as the worker's.
    app.conf.worker_prefetch_multiplier = max(1, a.prefetch // a.concurrency)
    app.conf.broker_transport_options = {"confirm_publish": a.confirm}

    log = open(f"/tmp/{QUEUE}.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fanout", "worker",
         f"--pool={a.pool}", f"--concurrency={a.concurrency}",
         "--without-mingle", "--without-gossip", "--without-heartbeat",
         "--loglevel=WARNING", "-n", f"{QUEUE}@%h", "-Q", QUEUE],
        env=env, cwd=here, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,
    )
    result: dict[str, object] = {}
    try:
        # Warm-up: the worker is up and every pool process has run a task.
        app.AsyncResult(fanout(20).apply_async().id).get(timeout=120)
        procs = descendants(worker.pid)
        brokers, rediss = pids_named("beam.smp"), pids_named("redis-server")

        def cpu() -> tuple[float, float, float]:
            return (sum(cpu_secs(p) for p in procs),
                    sum(cpu_secs(p) for p in brokers),
                    sum(cpu_secs(p) for p in rediss))

        load_before = loadavg()
        main_before = cpu_secs(worker.pid)
        before = cpu()
        t0 = time.time()
        r = fanout(a.tasks).apply_async()
        # The final task's own result: a chain's AsyncResult.get() would
        # also query each of the 10,000 parents (follow_parents), which
        # takes longer than the fan-out itself.
        finished_at = app.AsyncResult(r.id).get(timeout=a.timeout)
        t_result = time.time()
        after = cpu()
        main_after = cpu_secs(worker.pid)
        total = a.tasks + 2
        per_k = [(y - x) * 1e3 / (total / 1e3) for x, y in zip(before, after)]
        result = {
            "system": "celery",
            "pool": a.pool,
            "concurrency": a.concurrency,
            "prefetch_multiplier": max(1, a.prefetch // a.concurrency),
            "confirm_publish": a.confirm,
            "tasks": total,
            "tasks_per_s_to_final_task": round(total / (finished_at - t0), 1),
            "tasks_per_s_to_result": round(total / (t_result - t0), 1),
            "worker_cpu_ms_per_1000": round(per_k[0], 1),
            "worker_processes": len(procs),
            "worker_main_process_cpu_ms_per_1000":
                round((main_after - main_before) * 1e3 / (total / 1e3), 1),
            "broker_cpu_ms_per_1000": round(per_k[1], 1),
            "redis_cpu_ms_per_1000": round(per_k[2], 1),
            # A broker restarted during the run (another job's chaos phase)
            # makes its CPU figure meaningless.
            "broker_restarted": sorted(pids_named("beam.smp")) != sorted(brokers),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "celery": __import__("celery").__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        }
    finally:
        try:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        except Exception:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        cleanup()
    line = json.dumps(result)
    print(line)
    if a.json:
        with open(a.json, "a") as f:
            f.write(line + "\n")


def cleanup() -> None:
    """Deletes the queue, the exchange and the Redis keys of this run."""
    from kombu import Exchange, Queue

    with app.connection_for_write() as conn:
        ch = conn.default_channel
        Queue(QUEUE, Exchange(QUEUE), QUEUE, channel=ch).delete()
        Exchange(QUEUE, channel=ch).delete()
    import redis

    rd = redis.Redis.from_url(REDIS_URL)
    keys = list(rd.scan_iter(match=KEY_PREFIX + "*", count=1000))
    for i in range(0, len(keys), 1000):
        rd.delete(*keys[i:i + 1000])


if __name__ == "__main__":
    main()
