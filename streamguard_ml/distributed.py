"""Distributed data parallel for the training entrypoint, switched on by SageMaker's environment.

SageMaker starts the entry script once per host and describes the cluster in
``SM_HOSTS`` (all hosts), ``SM_CURRENT_HOST`` and ``SM_NUM_GPUS`` (per host).
When that adds up to more than one process, :func:`launch` turns this host's
script into its share of a ``torch.distributed`` job:

* one process per host (CPU, or one GPU): this process joins the job itself
  (``RANK`` = the host's index);
* several GPUs on a host: ``torchrun`` starts one worker per GPU, each
  re-entering ``python -m streamguard_ml.train`` with the same arguments.

The rendezvous is the first host (``MASTER_ADDR``, port 29500), both of which
can be overridden through the environment.  :func:`setup` then initialises
the process group (NCCL on GPUs, gloo on CPUs) and the training loop uses the
small hooks of :class:`Distributed`: wrap the model, take every n-th batch,
sum the epoch statistics, share rank 0's validation result, and let only
rank 0 print, checkpoint and write the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar

log = logging.getLogger(__name__)

DEFAULT_PORT = "29500"
T = TypeVar("T")


@dataclass(frozen=True)
class Topology:
    """The cluster as SageMaker describes it to one host."""

    hosts: tuple[str, ...]
    current_host: str
    gpus_per_host: int

    @property
    def procs_per_host(self) -> int:
        return max(1, self.gpus_per_host)

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.procs_per_host

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Topology":
        hosts = tuple(json.loads(env.get("SM_HOSTS") or "[]")) or ("algo-1",)
        current = env.get("SM_CURRENT_HOST") or hosts[0]
        if current not in hosts:
            raise SystemExit(f"SM_CURRENT_HOST={current!r} is not in SM_HOSTS={list(hosts)}")
        return cls(tuple(sorted(hosts)), current, int(env.get("SM_NUM_GPUS") or 0))


def rendezvous(topology: Topology, env: Mapping[str, str]) -> tuple[str, str]:
    return env.get("MASTER_ADDR") or topology.hosts[0], env.get("MASTER_PORT") or DEFAULT_PORT


def torchrun_command(topology: Topology, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``torchrun`` for this host: one worker per GPU, each running the entrypoint module."""
    addr, port = rendezvous(topology, env)
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(topology.hosts)}",
            f"--nproc-per-node={topology.procs_per_host}", f"--node-rank={topology.node_rank}",
            f"--master-addr={addr}", f"--master-port={port}", "-m", "streamguard_ml.train", *argv]


def launch(argv: Sequence[str], env: dict[str, str] | None = None) -> int | None:
    """Start this host's share of a multi-process job; None means "go on training in this process".

    Returns torchrun's exit code when it ran the workers.  Inside a worker
    (``RANK`` already set) and on a single process it does nothing.
    """
    env = os.environ if env is None else env
    if "RANK" in env:
        return None
    topology = Topology.from_env(env)
    if topology.world_size == 1:
        return None
    addr, port = rendezvous(topology, env)
    if topology.procs_per_host == 1:
        log.info("distributed: host %s is rank %d of %d (rendezvous %s:%s)", topology.current_host,
                 topology.node_rank, topology.world_size, addr, port)
        env.update({"RANK": str(topology.node_rank), "WORLD_SIZE": str(topology.world_size), "LOCAL_RANK": "0",
                    "MASTER_ADDR": addr, "MASTER_PORT": port})
        return None
    cmd = torchrun_command(topology, argv, env)
    log.info("distributed: %d GPUs x %d hosts, running %s", topology.procs_per_host, len(topology.hosts),
             " ".join(cmd))
    return subprocess.run(cmd, env=dict(env)).returncode


class Distributed:
    """This process's place in the job (rank 0 of 1 when not distributed) and the loop's hooks."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        import torch

        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: Any) -> Any:
        """The model the training step calls: DDP averages gradients across processes."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def epoch(self, model: Any, batches: Iterable[T]) -> Iterator[T]:
        """This process's batches of one epoch: every ``world_size``-th, starting at ``rank``.

        All processes draw the same seeded order.  DDP's ``join`` lets a rank that
        got one batch fewer finish the epoch without hanging the others.
        """
        with model.join() if self.enabled else contextlib.nullcontext():
            for i, batch in enumerate(batches):
                if i % self.world_size == self.rank:
                    yield batch

    def sum(self, *values: float) -> list[float]:
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def from_main(self, obj: T) -> T:
        """Rank 0's value everywhere (so every process takes the same early-stopping decision)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the group after the last collective (rank 0 then finishes the model alone)."""
        if self.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


def setup(env: Mapping[str, str] | None = None) -> Distributed:
    """Join the process group that :func:`launch` (or torchrun) described in the environment."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    import torch.distributed as dist

    ctx = Distributed(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")))
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=world,
                            **({"device_id": ctx.device} if backend == "nccl" else {}))
    log.info("rank %d/%d joined (%s on %s)", ctx.rank, world, backend, ctx.device)
    return ctx


def parameter_checksum(model: Any) -> float:
    """A number that is equal across processes exactly when their weights are (DDP keeps them so)."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))
