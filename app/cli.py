"""``trc``: the command line of Total Runtime Control."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from agents_bridge.settings import SettingsError, load_settings
from app.broker import BrokerStartError, EmbeddedBroker

__all__ = ["main"]


def _broker(args: argparse.Namespace) -> int:
    broker = EmbeddedBroker(args.port)
    try:
        broker.start()
    except BrokerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"embedded broker ready on {broker.bootstrap_servers} (pid {broker.pid}); Ctrl-C stops it"
    )
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop:
            signal.pause()
    finally:
        broker.stop()
        print("embedded broker stopped")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from app.worker import create_app

    settings = load_settings()
    app = create_app(settings)
    worker = Worker(app, loglevel=args.log_level, quiet=True)
    worker.execute_from_commandline()  # returns only via SystemExit
    return 0


def _demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(port=args.port, web_port=args.web_port)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trc`` console script."""
    parser = argparse.ArgumentParser(prog="trc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    broker = commands.add_parser("broker", help="run the embedded Kafka-compatible broker")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(func=_broker)

    worker = commands.add_parser("worker", help="run a detection worker (settings from TRC_*)")
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(func=_worker)

    demo = commands.add_parser("demo", help="embedded broker + worker + a demo fleet, live")
    demo.add_argument("--port", type=int, default=19092, help="embedded broker port")
    demo.add_argument("--web-port", type=int, default=16066, help="worker web/metrics port")
    demo.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
