"""``python -m warren worker module:attribute``: runs the :class:`~warren.Worker`
that ``module`` (importable from the current directory) holds in
``attribute``, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .worker import Worker


def load(target: str) -> Worker:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"expected module:attribute, not {target!r}")
    sys.path.insert(0, os.getcwd())
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Worker):
        raise SystemExit(f"{target} is a {type(obj).__name__}, not a warren.Worker")
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warren")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run a warren.Worker defined in a module")
    w.add_argument("target", help="module:attribute, e.g. tasks:worker")
    args = parser.parse_args(argv)
    load(args.target).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
