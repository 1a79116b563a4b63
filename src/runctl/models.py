"""Plain frozen records passed between runctl's parts. No I/O, no heavy imports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class Record:
    """Mixin: ``to_dict`` for JSON output and ``from_dict`` that ignores unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class FileEntry(Record):
    """One file of a checkpoint snapshot: its path inside the snapshot, size and hash."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CheckpointInfo(Record):
    """A complete checkpoint snapshot (its MANIFEST.json exists)."""

    seq: int
    created: str  # ISO 8601, UTC
    files: tuple[FileEntry, ...]
    url: str  # where the snapshot's files are, e.g. s3://bucket/jobs/J/checkpoints/00000003
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "total_bytes": self.total_bytes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointInfo:
        files = tuple(FileEntry.from_dict(f) for f in data.get("files", ()))
        return cls(
            seq=int(data["seq"]),
            created=data.get("created", ""),
            files=files,
            url=data.get("url", ""),
            metadata=dict(data.get("metadata") or {}),
        )
