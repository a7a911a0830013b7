"""Logging of a workflow job: lines to the job's log file and stderr, and an uncaught error's message and
traceback in the log file too, so that ``logs/`` tells what happened to a job that failed."""

from __future__ import annotations

import logging
import os
import sys
import traceback


def setup(log_file: str | None = None) -> logging.Logger:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
    logger = logging.getLogger("netquant")
    previous = sys.excepthook

    def log_uncaught(kind, error, tb) -> None:
        if log_file:
            with open(log_file, "a") as f:
                f.write(f"error: {kind.__name__}: {error}\n")
                f.write("".join(traceback.format_exception(kind, error, tb)))
        previous(kind, error, tb)

    sys.excepthook = log_uncaught
    return logger
