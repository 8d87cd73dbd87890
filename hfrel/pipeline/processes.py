"""The processes of a run: launcher detection, accelerate's join, and gathering on every process.

A failure on one process must not leave the others waiting in a gather forever: each process runs
its share inside `Processes.run_together`, which gathers success or failure alike and then raises the
same `ProcessFailedError` on every process when any of them failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from hfrel._errors import HfrelError, ProcessFailedError

T = TypeVar("T")

_WORLD_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def launched_world() -> int | None:
    """The number of processes a launcher (accelerate launch, torchrun, mpirun) started, or None when
    this process was started on its own. Read from the environment, as accelerate reads it."""
    for variable in _WORLD_VARIABLES:
        if os.environ.get(variable, "").strip().isdigit():
            return int(os.environ[variable])
    return 1 if os.environ.get("LOCAL_RANK", "").strip().isdigit() else None


def launched_rank() -> int:
    """This process's rank as its launcher set it (0 when started on its own)."""
    for variable in _RANK_VARIABLES:
        if os.environ.get(variable, "").strip().isdigit():
            return int(os.environ[variable])
    return 0


@dataclass(frozen=True)
class Processes:
    """The processes sharing a run: this one's rank, how many, and how to gather objects on all."""

    rank: int = 0
    world: int = 1
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order, on every process."""
        if not self.distributed:
            return [value]
        from accelerate.utils import gather_object

        return list(gather_object([value]))

    def run_together(self, work: Callable[[], T]) -> T:
        """This process's `work()`, once every process has finished its own without an error.

        With several processes, an exception in `work` is caught, and every process learns in one
        gather whether any failed; then every process raises the same ProcessFailedError naming the
        first process that failed (its exit code: 2 when that failure was bad input, else 1). So no
        process is left waiting in a later gather for one that is gone. On its own, a process raises
        its own exception unchanged.
        """
        if not self.distributed:
            return work()
        failure: Exception | None = None
        try:
            value = work()
            status = None
        except Exception as error:
            failure = error
            status = (type(error).__name__, str(error), isinstance(error, HfrelError))
        failed = [(rank, each) for rank, each in enumerate(self.gather(status)) if each is not None]
        if failed:
            rank, (kind, message, bad_input) = failed[0]
            others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise ProcessFailedError(
                f"process {rank} of {self.world} failed{others}: {kind}: {message}",
                exit_code=2 if bad_input else 1,
            ) from failure
        return value


def join_processes(cpu: bool) -> tuple[Processes, torch.device | None]:
    """The launcher's processes through `accelerate.PartialState` (the device it gives this process);
    on its own, a single process and no accelerate state at all (so a later `Accelerator()` in the
    same program is configured as if hfrel had not run).

    `cpu`: run the processes on the CPU (gloo); accelerate otherwise picks each process's GPU.
    """
    world = launched_world()
    if world is None:
        return Processes(), None
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.num_processes != world:
        raise HfrelError(
            f"the launcher started {world} processes but accelerate's state counts {state.num_processes}, so each "
            f"would explain everything: an Accelerator or PartialState made earlier in this program decided it; "
            f"make it with cpu={cpu} (on CPUs the processes need cpu=True to join over gloo)"
        )
    return Processes(state.process_index, state.num_processes, True), state.device
