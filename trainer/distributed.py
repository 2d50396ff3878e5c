"""Distributed training under `torchrun` / `accelerate launch` (WORLD_SIZE > 1): process-group set-up, each
process's share of a global batch, and sums over processes. With WORLD_SIZE unset every function is the
single-process case, so a stage runs the same code on one process or many.
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import signal
import sys
from contextlib import nullcontext

import torch


def dist_info() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when launched by torchrun/accelerate."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        die_with_launcher()
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("LOCAL_RANK") else "gloo")
        # one process group for the life of the process: stages run one after another in one process share it
        # (gloo cannot set up a second default group in a process once the first is destroyed)
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own, out of reach of a kill aimed at the launcher's process
    group (how the worker stops a job): on Linux a rank is killed when its launcher dies instead, so a killed
    worker, job or launcher leaves no rank training on (holding a GPU). Elsewhere a no-op."""
    if sys.platform.startswith("linux") and os.environ.get("TORCHELASTIC_RUN_ID"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def micro_chunks(global_batch: list, *, rank: int, world: int, micro: int) -> list[tuple[list, float]]:
    """This process's share of a global batch in microbatches, as (groups, 1.0 = real | 0.0 = filler).

    Under DDP every process must run as many backward passes as the others (each one's gradient
    all-reduce waits for all), so a process whose share is shorter, or empty (a last batch smaller
    than the world), fills in with a zero-weight copy of the batch's first group."""
    local = global_batch[rank::world]
    n = math.ceil(math.ceil(len(global_batch) / world) / micro)  # the longest share's microbatch count
    chunks = [(local[m : m + micro], 1.0) for m in range(0, len(local), micro)]
    return chunks + [([global_batch[0]], 0.0)] * (n - len(chunks))


def all_reduce_sum(values: list[float], world: int) -> list[float]:
    if world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def process_device(device: torch.device, world: int) -> torch.device:
    """This process's GPU (LOCAL_RANK) when several processes share a CUDA machine; `device` otherwise."""
    if world > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def end_process_group(world: int) -> None:
    """The end of a stage: wait for every process (rank 0 has renamed its output into place).

    The caller drops its DDP wrapper first, while every rank is still here: left to the caller's frame teardown,
    after the process group is destroyed (at exit), the wrapper's destructor (its reducer holds the process group)
    could wait forever (seen in CI: one rank stuck on returning from the training function)."""
    if world <= 1:
        return
    import torch.distributed as dist

    gc.collect()
    dist.barrier()


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class NoOutput:
    """What a rank other than 0 writes: nothing (the context manager that stands in for its output directory)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def ddp(module: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """`module` under DistributedDataParallel when several processes train (gradients all-reduced on the last
    backward of a step); the module itself on one process."""
    if world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def sync_on_last(model: torch.nn.Module, i: int, n: int, world: int):
    """The context of microbatch i of n: DDP all-reduces on the last backward only, the others accumulate locally.
    A sharded (FSDP) model reduce-scatters after every backward (it holds no whole gradient to accumulate into)."""
    return nullcontext() if world <= 1 or i == n - 1 or not hasattr(model, "no_sync") else model.no_sync()


def whole_value(t: torch.Tensor) -> float:
    """A scalar's value; of a sharded (DTensor) one, e.g. the gradient norm of FSDP parameters, the whole of it."""
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


def gather_rows(tensors: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    """The global batch of per-row tensors whose rows are shared out as global_batch[rank::world].

    Each tensor is [b_rank, ...]; a second dimension that differs between processes (a response width) is padded
    with zeros to the widest. -> the same keys, [B, ...] in global row order, on each tensor's device."""
    if world <= 1:
        return tensors
    import torch.distributed as dist

    shares: list = [None] * world
    dist.all_gather_object(shares, {k: v.detach().cpu() for k, v in tensors.items()})
    out = {}
    for key, local in tensors.items():
        parts = [share[key] for share in shares]
        if local.dim() >= 2:
            width = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, width - p.shape[1])) for p in parts]
        rows = [parts[i % world][i // world] for i in range(sum(len(p) for p in parts))]
        out[key] = (torch.stack(rows) if rows else torch.cat(parts)).to(local.device)
    return out


def gather_groups(items: list, world: int, group: int = 1) -> list:
    """The global list of items whose groups of `group` consecutive items (a prompt's samples) are shared out as
    groups[rank::world], from every process's share, in global order (every process gets it)."""
    if world <= 1:
        return items
    import torch.distributed as dist

    shares: list = [None] * world
    dist.all_gather_object(shares, items)
    n_groups = sum(len(share) for share in shares) // group
    return [x for i in range(n_groups) for x in shares[i % world][(i // world) * group : (i // world + 1) * group]]


def fsdp_requested(flag: bool) -> bool:
    """Sharding asked for: the stage's --fsdp, or `accelerate launch` with an FSDP config (which sets
    ACCELERATE_USE_FSDP for the processes it starts)."""
    return flag or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def shard(module: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 (`fully_shard`): each process holds 1/world of every parameter, gradient and optimizer state. Each
    transformer block is its own unit (its parameters gathered for its forward and backward only, then freed), the
    rest the root's. The block class: the accelerate config's FSDP_TRANSFORMER_CLS_TO_WRAP, else the model's
    `_no_split_modules` (GPT2Block, LlamaDecoderLayer, ...). In place: make the optimizer afterwards."""
    from torch.distributed.fsdp import fully_shard

    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    blocks = {n.strip() for n in names.split(",") if n.strip()} or set(getattr(module, "_no_split_modules", None) or [])
    for sub in list(module.modules()):
        if sub is not module and type(sub).__name__ in blocks:
            fully_shard(sub)
    fully_shard(module)
    return module


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A sharded module's whole state dict, on the CPU of rank 0 (empty elsewhere); every process must call it.
    A parameter shared under two names (tied embeddings) is kept under its first, as save_pretrained keeps it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    seen: set[int] = set()
    again = set()
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            again.add(name)
        seen.add(id(p))
    return {k: v for k, v in state.items() if k not in again}
