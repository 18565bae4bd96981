"""All reads and writes of a run directory, through fsspec so a local path or a remote URI both work.

Stage outputs are Parquet part files plus a `_SUCCESS` marker written last: a stage is finished
only when its marker exists, which holds on object stores where a folder rename is not atomic.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from factory.errors import MissingDependency

SUCCESS = "_SUCCESS"
PARTIAL = ".tmp"  # suffix of a part file being written: never read as a part, removed by remove_partial


# Filesystems a run directory may live on beyond what fsspec and s3fs bring, and the extra holding each.
EXTRAS = {"gs": "gcs", "gcs": "gcs"}


class RunDir:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        except ImportError as e:  # fsspec names the package; say which extra brings it
            scheme = self.uri.split("://", 1)[0]
            extra = f" (pip install -e '.[{EXTRAS[scheme]}]')" if scheme in EXTRAS else ""
            raise MissingDependency(f"run_dir {self.uri}: {e}{extra}") from None

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def makedirs(self, *parts: str) -> str:
        p = self.path(*parts)
        self.fs.makedirs(p, exist_ok=True)
        return p

    # --- text and JSON ---
    def write_text(self, rel: str, text: str) -> None:
        """Write via a temporary name then move, so a reader never sees half a file."""
        target = self.path(rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        self.fs.mv(tmp, target)

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "r", encoding="utf-8") as f:
            return f.read()

    def read_json(self, rel: str, default: Any = None) -> Any:
        return json.loads(self.read_text(rel)) if self.exists(rel) else default

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    # --- Parquet parts ---
    def write_part(self, stage: str, tbl: pa.Table, name: str | None = None) -> str:
        """Append one part file to a stage folder (temporary name, then move)."""
        self.makedirs(stage)
        name = name or f"part-{uuid.uuid4().hex}.parquet"
        target = self.path(stage, name)
        tmp = target + PARTIAL
        pq.write_table(tbl, tmp, filesystem=self.fs, compression="zstd")
        self.fs.mv(tmp, target)
        return target

    def ls(self, rel: str) -> list[str]:
        """Paths in a folder (none when it does not exist), listed afresh."""
        # Ray workers write stage folders from other processes; an object store's listing cache here
        # (s3fs, gcsfs) would not see their files.
        self.fs.invalidate_cache(self.path(rel))
        if not self.exists(rel):
            return []
        return sorted(self.fs.ls(self.path(rel), detail=False))

    def remove_partial(self, stage: str) -> None:
        """Remove the temporary files a killed writer left in `stage` (never read: not `.parquet`)."""
        for path in self.ls(stage):
            if path.endswith(".parquet" + PARTIAL):
                self.fs.rm(path)

    def parts(self, stage: str) -> list[str]:
        return [p for p in self.ls(stage) if p.endswith(".parquet")]

    def read_stage(self, stage: str, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        parts = self.parts(stage)
        if not parts:
            if schema is None:
                raise FileNotFoundError(self.path(stage))
            return schema.empty_table()
        tables = [pq.read_table(p, filesystem=self.fs, columns=columns) for p in parts]
        return pa.concat_tables(tables, promote_options="default")

    def reset_stage(self, stage: str) -> None:
        if self.exists(stage):
            self.fs.rm(self.path(stage), recursive=True)

    def is_done(self, stage: str, fingerprint: str = "") -> bool:
        """Finished, and with the same settings and inputs (the marker holds their fingerprint)."""
        return self.exists(stage, SUCCESS) and self.read_text(posixpath.join(stage, SUCCESS)) == fingerprint

    def mark_done(self, stage: str, fingerprint: str = "") -> None:
        self.write_text(posixpath.join(stage, SUCCESS), fingerprint)

    def marker(self, stage: str) -> str | None:
        return self.read_text(posixpath.join(stage, SUCCESS)) if self.exists(stage, SUCCESS) else None
