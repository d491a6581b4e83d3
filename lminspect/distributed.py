"""Running under torchrun: join the process group, shard work, gather results on every rank.

One owner for what training, sweeps, ``eval_mc`` and ``activations`` do when started as
``torchrun --nproc_per_node N -m lminspect ...`` (torchrun sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``; several machines join with ``--nnodes`` and ``--rdzv_endpoint``).
Without those variables everything here is a no-op for one process (rank 0 of 1), so callers
need no special case and torch.distributed is never imported.

Choices: gloo on the CPU, nccl when the work runs on CUDA (``join(device)``). Results travel as
pickled Python objects (``all_gather_object``/``broadcast_object_list``): what is gathered is
small (scores per item, per-site statistics vectors) and this keeps the callers free of tensor
plumbing. Work unit ``i`` belongs to rank ``i % world`` (``shard``).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from lminspect.errors import UserError

T = TypeVar("T")


def world_size() -> int:
    """Processes torchrun started (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank as torchrun set it, before (or without) joining the group."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the one process that writes files and prints results (rank 0)."""
    return env_rank() == 0


def join(device: str = "cpu") -> tuple[int, int, bool]:
    """(rank, world, joined_here): join the process group torchrun describes in the environment.

    nccl when ``device`` is CUDA, gloo otherwise. ``joined_here`` says this call created the
    group (so the caller may tear it down with ``leave``). One process: ``(0, 1, False)``."""
    if world_size() <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # nccl's object collectives use it
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    # a group still alive when the interpreter finalizes tears down gloo's threads in C++ static
    # destruction, and a rank aborts at exit ("terminate called without an active exception") about
    # one run in three: the REPL's eval_mc / perplexity join and never leave, so close it first
    atexit.register(_destroy_at_exit)
    return dist.get_rank(), dist.get_world_size(), True


def _destroy_at_exit() -> None:
    """Destroy the process group if it is still there (no barrier: a rank that failed must not
    make the others wait at exit)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: str, rank: int, world: int) -> str:
    """``cuda`` means this process's own GPU (``LOCAL_RANK``) when torchrun started several."""
    if device == "cuda" and world > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    return device


def leave(joined_here: bool) -> None:
    """Wait for every rank, then destroy the group this process created (no-op otherwise)."""
    if joined_here:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def shard(n: int, rank: int, world: int) -> list[int]:
    """The work units of ``rank``: ``i`` with ``i % world == rank``, in order."""
    return list(range(rank, n, world))


def gather_in_order(mine: Sequence[int], values: Sequence[Any], n: int, world: int) -> list[Any]:
    """Every rank's ``values`` (one per unit in ``mine``) put back in unit order, on every rank."""
    if world <= 1:
        full = [None] * n
        for i, v in zip(mine, values, strict=True):
            full[i] = v
        return full
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (list(mine), list(values)))
    full: list[Any] = [None] * n
    for idx, vals in parts:
        for i, v in zip(idx, vals, strict=True):
            full[i] = v
    return full


def gather_objects(obj: Any, world: int) -> list[Any]:
    """``obj`` of every rank, by rank, on every rank (``[obj]`` for one process)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, obj)
    return parts


def gather_to_main(obj: Any, world: int) -> list[Any] | None:
    """``obj`` of every rank, by rank, on rank 0 (None on the others; ``[obj]`` for one process)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    parts: list[Any] | None = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, parts, dst=0)
    return parts


def sum_over_ranks(values: Sequence[float], world: int) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64), on every rank."""
    if world <= 1:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T], rank: int, world: int) -> T | None:
    """Run ``fn`` on rank 0 and let every rank share its outcome: its result, or its UserError
    raised on every rank (so all processes end with the same one-line error and exit code 2,
    instead of the others hanging in the next collective). Other ranks get rank 0's result."""
    if world <= 1:
        return fn()
    out: tuple[str, Any] = ("ok", None)
    if rank == 0:
        try:
            out = ("ok", fn())
        except UserError as e:
            out = ("error", e.message)
            broadcast(out, world)
            raise
        except BaseException as e:  # noqa: BLE001 - tell the others before this rank dies
            broadcast(("crash", f"rank 0 failed: {type(e).__name__}: {e}"), world)
            raise
    out = broadcast(out, world)
    if out[0] == "error":
        raise UserError(out[1])
    if out[0] == "crash":
        raise RuntimeError(out[1])
    return out[1]
