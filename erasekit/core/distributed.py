"""The processes of a data-parallel run (`accelerate launch --multi_gpu --num_processes N -m erasekit …`,
or torchrun), through accelerate's PartialState.

PartialState alone treats a multi-process launch on a machine without GPUs as N independent
processes; asked for the CPU there, it joins them into one gloo group (accelerate's MULTI_CPU).
Every place that asks which process it is asks here, so they all see the same state.
"""

from __future__ import annotations


def processes():
    """accelerate's PartialState of this run (one process when nothing launched it)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def share(*batch):
    """This process's share of a batch every process drew alike (the same generator stream): items
    rank, rank + N, rank + 2N, ... of each tensor (or list). With gradients averaged across the N
    processes, a step on the shares is the one-process step on the whole batch."""
    state = processes()
    if state.num_processes == 1:
        return batch if len(batch) > 1 else batch[0]
    sliced = tuple(item[state.process_index::state.num_processes] for item in batch)
    return sliced if len(sliced) > 1 else sliced[0]
