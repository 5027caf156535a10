"""Dispatch: run a sweep's points on Slurm (submitit job arrays) or on this machine.

``launch`` submits what is missing and returns; ``reconcile`` (``scaling status``)
follows the jobs with one scheduler query and ingests finished runs; ``cancel`` stops
them. Every submission is recorded in the results store before it is made.
"""

from scaling.dispatch.cancel import cancel
from scaling.dispatch.launch import LaunchOptions, LaunchReport, launch
from scaling.dispatch.recover import recover
from scaling.dispatch.status import Summary, reconcile, watch

__all__ = ["LaunchOptions", "LaunchReport", "Summary", "cancel", "launch", "reconcile", "recover", "watch"]
