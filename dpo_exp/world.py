"""The world a process belongs to: one process, Lightning's own ranks, or a cluster launcher's.

A launcher outside Lightning (torchrun, SLURM's srun) starts every rank itself, each composing
its own config: left alone, each would stamp its own run folder with its own start time and take
its own resume decision. Here rank 0 decides what all must agree on and hands it to the others
through the launch's key-value store, the one the process group is later built on: torchrun's
agent hosts it; under SLURM rank 0 hosts it at the main address and port Lightning's
SLURMEnvironment chooses, and torch's rendezvous reuses that server (a multi-tenant TCPStore)
when the process group starts. Lightning reads the same environment through the same classes, so
the world checked at the entry is the one it builds.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from dpo_exp.errors import ConfigError, UserError

# How long a rank waits for rank 0's decision (its config composed, its folder made, the resume
# choice read from disk): ranks of one launch start within seconds of each other.
AGREE_TIMEOUT = timedelta(minutes=5)
# How long a rank 0 that hosts the store waits, once it would exit, for ranks yet to read its
# answers: ranks of one launch start within seconds of each other; a rank 0 started alone waits
# this long before it exits.
READ_GRACE = timedelta(seconds=30)
_STORES: dict[tuple[str, int], torch.distributed.Store] = {}  # kept: rank 0's may host the server
_UNREAD: list[tuple[torch.distributed.Store, str, int]] = []  # (store, read counter, readers) to wait for


def cluster_environment() -> ClusterEnvironment | None:
    """The launcher that started this process and its peers, as Lightning detects it (the same
    order), or None when Lightning itself starts the ranks (or there is one process)."""
    for kind in (SLURMEnvironment, TorchElasticEnvironment):
        if kind.detect():
            try:
                return kind()
            except RuntimeError as error:  # Lightning's check of the variables srun sets
                raise ConfigError(slurm_variables_message(error)) from None
    return None


def slurm_variables_message(error: RuntimeError) -> str:
    """SLURM's variables as a batch script has them, without the ones srun sets for each rank."""
    tasks = os.environ.get("SLURM_NTASKS")
    return (
        f"SLURM_NTASKS={tasks} is set but not SLURM_NTASKS_PER_NODE, as in a batch script that runs "
        "python without srun: start the ranks with srun in a job given --ntasks-per-node, or run one "
        "process here (unset SLURM_NTASKS, or set SLURM_JOB_NAME=interactive)"
        if tasks is not None and "SLURM_NTASKS_PER_NODE" not in os.environ
        else f"SLURM: {error}"
    )


def launcher_name(environment: ClusterEnvironment) -> str:
    return "SLURM" if isinstance(environment, SLURMEnvironment) else "torchrun"


def world_source(environment: ClusterEnvironment) -> str:
    """Where the world size was read: `torchrun (WORLD_SIZE=2)`, `SLURM (SLURM_NTASKS=2, SLURM_NNODES=2)`."""
    if isinstance(environment, SLURMEnvironment):
        nodes = os.environ.get("SLURM_NNODES")
        nodes = f", SLURM_NNODES={nodes}" if nodes else ""
        return f"SLURM (SLURM_NTASKS={environment.world_size()}{nodes})"
    return f"torchrun (WORLD_SIZE={environment.world_size()})"


def started_by_lightning() -> bool:
    """Whether Lightning's launcher started this process for a rank > 0 of a run launched here."""
    return cluster_environment() is None and int(os.environ.get("LOCAL_RANK") or 0) > 0


def check_world(num_nodes: int, devices: Any) -> None:
    """Refuse a config whose world (`num_nodes` × `devices`) is not the launcher's (ConfigError)."""
    environment = cluster_environment()
    if environment is None:
        return
    if not isinstance(devices, int):
        raise ConfigError(
            f"strategy.devices={devices}: under {launcher_name(environment)} it must be the number of "
            f"processes per node, as {world_source(environment)} counts them"
        )
    nodes = os.environ.get("SLURM_NNODES") if isinstance(environment, SLURMEnvironment) else None
    if num_nodes * devices != environment.world_size() or (nodes is not None and int(nodes) != num_nodes):
        raise ConfigError(
            f"strategy.num_nodes={num_nodes} × strategy.devices={devices} is a world of "
            f"{num_nodes * devices}, but {world_source(environment)} started "
            f"{environment.world_size()} processes: set them to the launcher's nodes and processes per node"
        )


def agreed(key: str, decide: Callable[[], str | None]) -> str | None:
    """`decide()` on rank 0 and its answer on every other rank of a cluster-launched world; in one
    process, or under Lightning's own launcher (which hands its ranks the answer itself), `decide()`.

    A UserError rank 0 raises is raised on every rank, so all stop with its message.
    """
    environment = cluster_environment()
    if environment is None or environment.world_size() == 1:
        return decide()
    store = launch_store(environment)
    key = f"dpo_exp/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{key}"  # each restart decides anew
    if environment.global_rank() == 0:
        try:
            value = decide()
        except UserError as error:
            store.set(key, json.dumps({"error": str(error)}))
            keep_until_read(store, key, environment)
            raise
        store.set(key, json.dumps({"value": value}))
        keep_until_read(store, key, environment)
        return value
    try:
        answer = json.loads(store.get(key))
        store.add(f"{key}/read", 1)
    except torch.distributed.DistStoreError:
        raise UserError(
            f"rank 0 did not say {key.rpartition('/')[2]} within {AGREE_TIMEOUT.seconds} s "
            f"(main address {environment.main_address}:{environment.main_port}): is it running?"
        ) from None
    if "error" in answer:
        raise ConfigError(answer["error"])
    return answer["value"]


def keep_until_read(store: torch.distributed.Store, key: str, environment: ClusterEnvironment) -> None:
    """Where rank 0 hosts the store, keep its process, and the server with it, until every other
    rank has read `key`, or READ_GRACE after it would have exited: a rank 0 that stops (a refusal)
    or finishes first would take the answer with it, and a rank started later (SLURM starts them in
    any order) would wait for it in vain. torchrun's agent hosts its store itself."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return
    if not _UNREAD:
        atexit.register(_wait_for_readers)
    _UNREAD.append((store, f"{key}/read", environment.world_size() - 1))


def _wait_for_readers() -> None:
    deadline = time.monotonic() + READ_GRACE.total_seconds()
    for store, counter, readers in _UNREAD:
        while store.add(counter, 0) < readers and time.monotonic() < deadline:
            time.sleep(0.05)


def launch_store(environment: ClusterEnvironment) -> torch.distributed.Store:
    """The launch's key-value store: torchrun's agent's, else one rank 0 hosts at the main port."""
    address = (environment.main_address, environment.main_port)
    if address not in _STORES:
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        _STORES[address] = torch.distributed.TCPStore(
            *address,
            is_master=not agent and environment.global_rank() == 0,
            timeout=AGREE_TIMEOUT,
            wait_for_workers=False,
            multi_tenant=True,  # the process group's rendezvous on rank 0 reuses this server
        )
    return _STORES[address]
