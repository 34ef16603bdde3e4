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
