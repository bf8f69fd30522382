"""Many processes under torchrun: process group, rank helpers, DDP/FSDP2 wrapping, full state dicts.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE. Without them there is one process, no process
group, and every helper here degrades to the single-process answer, so the loop has one path.
"""
from __future__ import annotations

import gc
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from codecomplete.engine.device import pick_device
from codecomplete.engine.errors import CodecompleteError
from codecomplete.engine.model import GPT

# Gathered onto rank 0's CPU: the form checkpoints are written in, whatever the wrapping.
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Loading: every rank passes the whole dict it read from the shared run folder.
# strict=False because the tied lm_head.weight may or may not be listed; shapes still must fit.
LOAD = StateDictOptions(full_state_dict=True, strict=False)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Rank 0 or no torchrun at all; readable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """torchrun's process count (1 without torchrun); readable before the process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def default_grad_accum(processes: int, saved: int | None = None) -> int:
    """--grad-accum when none is given: one micro-batch per process for a new run; a resumed
    run keeps its saved value if it splits, else the next multiple of the process count, so
    its effective batch shrinks never and grows as little as it can."""
    if saved is None:
        return processes
    return -(-saved // processes) * processes


def setup(requested_device: str) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) once; idempotent."""
    if "WORLD_SIZE" not in os.environ:
        return Dist(), pick_device(requested_device)
    info = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    device = pick_device(requested_device)
    if device.type == "mps":
        raise CodecompleteError("torchrun needs CUDA (nccl) or the CPU (gloo); Apple MPS has no process-group backend: pass --device cpu")
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)  # one GPU per process, by its rank on this node
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return info, device


def teardown(finished: bool) -> None:
    """Leave the process group while the interpreter is whole.

    Rank 0 may still be writing the last checkpoint when the others return; a rank whose gloo
    threads or pending work outlive destroy_process_group (held by cyclic garbage such as the
    wrapped model) is torn down at interpreter exit instead, and aborts ("terminate called
    without an active exception"). So: collect that garbage, and after a run that finished, wait
    for every rank before destroying. After a failure the peers may be gone, so no barrier.
    """
    if not dist.is_initialized():
        return
    gc.collect()
    if finished:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def micro_steps(grad_accum: int, info: Dist) -> range:
    """This rank's share of a step's micro-batches, as indices into the single-process order.

    Rank r takes a contiguous block, so the ranks together see exactly the batches one process
    would, and the effective batch (batch_size x grad_accum) and the data order do not depend on
    the number of processes: a run may resume on another world size and loss curves compare.
    """
    if grad_accum % info.world_size:
        raise CodecompleteError(
            f"--grad-accum {grad_accum} does not split over {info.world_size} processes; the effective batch is "
            f"--batch-size x --grad-accum, so use a --grad-accum that is a multiple of {info.world_size} (or fewer processes)"
        )
    share = grad_accum // info.world_size
    return range(info.rank * share, (info.rank + 1) * share)


def wrap(model: GPT, device: torch.device, fsdp: bool) -> torch.nn.Module:
    """DDP under torchrun; FSDP2 (each block sharded, then the root) with fsdp; else the model."""
    if fsdp:
        if not dist.is_initialized():
            raise CodecompleteError("--fsdp shards the model over processes; launch with torchrun --nproc_per_node N")
        for block in model.transformer.h:  # one all-gather per block: only one block's full weights live at a time
            fully_shard(block)
        fully_shard(model)  # the root: embeddings (tied with lm_head) and the final norm
        return model
    model = model.to(device)
    if dist.is_initialized():
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def unwrap(model: torch.nn.Module) -> GPT:
    """The GPT inside DDP (an FSDP2 model is its own GPT, still sharded)."""
    return model.module if isinstance(model, DDP) else model  # type: ignore[return-value]


def gradient_sync(model: torch.nn.Module, last: bool) -> AbstractContextManager:
    """Reduce gradients on the last micro-batch only: one all-reduce per optimizer step."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last)
    elif isinstance(model, DDP) and not last:
        return model.no_sync()
    return nullcontext()


def local_value(t: torch.Tensor) -> torch.Tensor:
    """FSDP2's clip_grad_norm_ returns a replicated DTensor; the plain tensor is the same on every rank."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def agree(loss: torch.Tensor, stop: bool, elapsed: float) -> tuple[float, bool, float]:
    """Means over ranks of the loss and elapsed seconds, and whether any rank was asked to stop.

    One small all-reduce per step. A NaN on one rank makes the sum NaN everywhere, so every rank
    skips (or rolls back) together; one elapsed time keeps the schedule and --minutes in step.
    """
    if not dist.is_initialized():
        return loss.item(), stop, elapsed
    t = torch.stack([loss.detach().float(), torch.tensor(float(stop), device=loss.device), torch.tensor(elapsed, device=loss.device)])
    dist.all_reduce(t)
    n = dist.get_world_size()
    return t[0].item() / n, t[1].item() > 0, t[2].item() / n


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's value on every rank (e.g. whether its checkpoint write failed)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def model_for_saving(model: torch.nn.Module, info: Dist) -> GPT | None:
    """A GPT holding the full weights on rank 0, None elsewhere; all ranks call it (FSDP gathers)."""
    if not isinstance(model, FSDPModule):
        return unwrap(model) if info.is_main else None
    state = get_model_state_dict(model, options=FULL)
    if not info.is_main:
        return None
    full = GPT(unwrap(model).config)
    full.load_state_dict(state, strict=False)
    return full


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, full on rank 0: any wrapping can load it."""
    return get_optimizer_state_dict(model, optimizer, options=FULL)


def load_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    """Put full weights and optimizer state (as read from disk on every rank) into the wrapped model."""
    set_model_state_dict(model, weights, options=LOAD)
    if optim["param_groups"] and all(isinstance(p, int) for p in optim["param_groups"][0]["params"]):
        optimizer.load_state_dict(optim)  # keyed by position: written before runs went multi-process
        return
    set_optimizer_state_dict(model, optimizer, optim, options=LOAD)
