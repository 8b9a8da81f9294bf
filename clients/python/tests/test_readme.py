"""The package README's examples, run as written (only the namespace is
changed to the test's): what a reader copies must work."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
from pathlib import Path

from support import Deployment

import warren

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def block(containing: str, namespace: str) -> str:
    found = [b for b in blocks() if containing in b]
    assert len(found) == 1, f"one README block with {containing!r}"
    return found[0].replace('namespace="warren"', f'namespace="{namespace}"')


def test_the_five_line_producer(deployment: Deployment) -> None:
    deployment.rust_worker()
    code = block("submit_and_wait", deployment.namespace)
    assert len(code.strip().splitlines()) <= 5
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})
    assert out.getvalue() == "succeeded hi\n"


def test_the_ten_line_worker_from_the_shell(deployment: Deployment, tmp_path: Path) -> None:
    code = block("images.resize", deployment.namespace)
    lines = [x for x in code.strip().splitlines() if x.strip() and not x.startswith("#")]
    assert len(lines) <= 10, lines
    (tmp_path / "tasks.py").write_text(code)
    deployment.queues.add("python")
    proc = subprocess.Popen(
        [sys.executable, "-m", "warren", "worker", "tasks:worker"],
        cwd=tmp_path,
        env=deployment.env,
        stderr=subprocess.PIPE,
    )
    try:
        with deployment.client() as client:
            report = client.submit_and_wait(
                {
                    "tasks": [
                        {
                            "id": "r",
                            "type": "images.resize",
                            "queue": "python",
                            "input": {"path": "a.jpg", "width": 100},
                        },
                        {
                            "id": "bad",
                            "type": "images.resize",
                            "queue": "python",
                            "input": {"path": "a.jpg"},
                            "retry": {"max_attempts": 3},
                        },
                    ]
                },
                timeout=60,
            )
        assert report.tasks["r"].output == {"path": "a.jpg", "width": 100, "attempt": 1}
        bad = report.tasks["bad"]
        assert bad.attempts == 1 and bad.error == warren.TaskError("no width", False)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


def test_the_builder_and_validation_examples(deployment: Deployment) -> None:
    code = block("etl.extract", deployment.namespace)
    scope: dict[str, object] = {}
    exec(code, scope)
    wf = scope["wf"]
    assert isinstance(wf, warren.Workflow)
    assert wf.to_dict()["tasks"][1]["input"] == {"rows": "${extract.output.rows}"}

    code = block("depnds_on", deployment.namespace)
    out = io.StringIO()
    with deployment.client() as client, contextlib.redirect_stdout(out):
        exec(code, {"client": client, "warren": warren})
    expected = re.search(r"depnds_on.*?\n((?:# .*\n)+)", code, re.S)
    assert expected is not None
    assert out.getvalue() == "".join(x[2:] + "\n" for x in expected.group(1).splitlines())
