"""The exit status of every command (train, eval, hub, data, report), and the mark of an error raised mid-work.

The rule is when a command failed, not why: one that refuses before any work (bad arguments, files or data, or data
and weights it cannot reach) exits 2, as argparse does, has written nothing, and says what to change; one that fails
once the work has begun (a run-time check, a training loss that became non-finite, a write that failed half-way)
exits 1, and says what it kept.
"""
from __future__ import annotations

import os
import signal
from enum import IntEnum

__all__ = ['ExitStatus', 'RunFailure', 'status_of', 'inject_fault']


class ExitStatus(IntEnum):
    """What a command's exit status means."""

    OK = 0
    FAILED = 1  # failed once the work had begun: a run-time check, a non-finite loss, a write that failed half-way
    BAD_INPUT = 2  # refused before any work, with nothing written; the message names the fix


class RunFailure(Exception):
    """Mixed into an error class raised once the work has begun (exit status 1), e.g. a run whose loss diverged."""


def status_of(error: BaseException) -> ExitStatus:
    """The exit status for an error a command caught: FAILED for a :class:`RunFailure`, else BAD_INPUT."""
    return ExitStatus.FAILED if isinstance(error, RunFailure) else ExitStatus.BAD_INPUT


def inject_fault(point: str, value: int = 0) -> None:
    """Fault injection for the resume tests of train and eval: ``TIMM_MMC_FAULT=POINT:VALUE`` SIGKILLs this process
    where a command calls ``inject_fault(POINT, VALUE)`` (train: ``step:11``, ``save:2``, ``best:8``, ``metrics:8``;
    eval: ``eval-attack:2``, after the second finished attack is saved); ``term-POINT:VALUE`` sends a SIGTERM instead.
    A suffix ``@RANK`` limits it to that process of a multi-process run (``term-step:3@1``). Unset, it does nothing."""
    spec, _, rank = os.environ.get('TIMM_MMC_FAULT', '').partition('@')
    if rank and rank != os.environ.get('RANK', '0'):
        return
    if spec and spec == f'{point}:{value}':
        os.kill(os.getpid(), signal.SIGKILL)
    elif spec and spec == f'term-{point}:{value}':  # a polite stop (StopSignal), e.g. TIMM_MMC_FAULT=term-step:6
        os.kill(os.getpid(), signal.SIGTERM)
