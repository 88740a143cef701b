"""A sharded (FSDP) checkpoint folder, checked without running any code stored in it.

torch's distributed-checkpoint reader unpickles the folder's `.metadata` index with `pickle.load`
and every non-tensor item of the shards with `torch.load(weights_only=False)`: a crafted folder
runs code as it loads. Before Lightning reads one, the index is parsed here by an unpickler that
accepts only the index's own types (a dataclass tree of names, sizes and dtypes), and every
non-tensor item is loaded weights-only from its slice of the shard; anything else is refused.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

DISTRIBUTED_INDEX = ".metadata"
INDEX_MODULE = "torch.distributed.checkpoint.metadata"
INDEX_TYPES = {
    (INDEX_MODULE, name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "TensorProperties",
        "ChunkStorageMetadata",
        "BytesStorageMetadata",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict"),
}


class ShardedCheckpointError(ValueError):
    """A sharded checkpoint whose index or items would run code, or do not fit the folder."""


class IndexUnpickler(pickle.Unpickler):
    """An unpickler that builds only the types a distributed-checkpoint index holds."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in INDEX_TYPES or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise ShardedCheckpointError(
            f"its {DISTRIBUTED_INDEX} refers to {module}.{name}, which an index never holds"
        )


def read_index(folder: Path) -> Any:
    """The folder's index, parsed by `IndexUnpickler`; ShardedCheckpointError if it holds anything else."""
    data = (folder / DISTRIBUTED_INDEX).read_bytes()
    try:
        index = IndexUnpickler(io.BytesIO(data)).load()
    except ShardedCheckpointError:
        raise
    except Exception as error:
        raise ShardedCheckpointError(
            f"its {DISTRIBUTED_INDEX} is not an index ({type(error).__name__})"
        ) from error
    if type(index).__name__ != "Metadata" or not isinstance(index.storage_data, dict):
        raise ShardedCheckpointError(f"its {DISTRIBUTED_INDEX} is not an index")
    return index


def check_sharded_items(folder: Path) -> None:
    """Every item the index points at lies in a shard of this folder; non-tensor items load weights-only."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    index = read_index(folder)
    byte_items = {
        name for name, entry in index.state_dict_metadata.items() if isinstance(entry, BytesStorageMetadata)
    }
    for key, where in index.storage_data.items():
        relative = Path(where.relative_path)
        if relative.is_absolute() or len(relative.parts) != 1 or relative.name in ("", ".", ".."):
            raise ShardedCheckpointError(f"its index points outside the folder ({where.relative_path})")
        if key.fqn not in byte_items:
            continue  # tensors are read weights-only by torch itself
        if getattr(where, "transform_descriptors", None):
            raise ShardedCheckpointError(f"item {key.fqn} is stored transformed; it cannot be checked")
        with (folder / relative).open("rb") as stream:
            stream.seek(where.offset)
            data = stream.read(where.length)
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:
            reason = str(error).splitlines()[0][:200]
            raise ShardedCheckpointError(f"item {key.fqn} does not load weights-only ({reason})") from error
