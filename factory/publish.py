"""Publish a dataset folder (run_dir/dataset) to the Hugging Face Hub, after checking it.

The check reads the folder the way the Hub and `datasets` will: the card's YAML header parses and has
the keys the Hub shows, every data file the configs name exists and reads, row counts match the card,
no shard is missing or left out of the configs, and the card's image links resolve.

The upload is `HfApi.upload_folder`: in huggingface_hub 2.x (with hf_xet) it is the resumable
large-folder pipeline (`upload_large_folder` is gone): files are committed in batches and a re-run skips
what the Hub already holds. Remote files under data/ and plots/ that the folder no longer has are
deleted in the same commit, so a re-shard never leaves stale shards matching `data/train-*`.

The token comes from HF_TOKEN or the login cache (`huggingface_hub.get_token`); it is never printed,
and error messages are scrubbed of it before they reach the user.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from factory.errors import FactoryError, InputError
from factory.storage import RunDir

Progress = Callable[[str], None]
SHARD_NAME = re.compile(r"(?P<split>\w+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet")
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
STALE_PATTERNS = ["data/*", "plots/*"]  # remote files here that the folder lacks are deleted
NOT_UPLOADED = ["_SUCCESS", ".*", "*/.*"]  # the run's stage marker, hidden and temporary files
RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass
class FolderCheck:
    """What a dataset folder holds, and everything wrong with it."""

    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (path in repo, bytes)
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows read from its files
    errors: list[str] = field(default_factory=list)

    def raise_if_bad(self) -> None:
        if self.errors:
            raise InputError(f"dataset folder {self.folder} is not ready to publish:\n  " + "\n  ".join(self.errors))

    def summary(self) -> str:
        total = sum(size for _, size in self.files)
        lines = [f"{len(self.files)} file(s), {total / 1e6:.2f} MB; rows: "
                 + ", ".join(f"{split}={n}" for split, n in self.rows.items())]
        lines += [f"  {size:>12,}  {path}" for path, size in self.files]
        return "\n".join(lines)


def dataset_folder(path: str) -> RunDir:
    """A run directory's dataset/ folder, or the path itself when it is a dataset folder."""
    run = RunDir(path)
    for candidate in (run, RunDir(run.uri + "/dataset")):
        if candidate.exists("README.md") and candidate.exists("data"):
            return candidate
    raise InputError(f"{path}: no dataset folder (README.md and data/) here or in {path}/dataset; run shard first")


@contextmanager
def local_copy(folder: RunDir) -> Iterator[Path]:
    """The folder as a local path: the Hub client uploads from local files only."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(folder.fs, LocalFileSystem):
        yield Path(folder.root)
        return
    with tempfile.TemporaryDirectory(prefix="factory-publish-") as tmp:
        folder.fs.get(folder.root.rstrip("/") + "/", tmp, recursive=True)
        yield Path(tmp)


def _data_files(config: dict) -> list[tuple[str, str]]:
    """(split, glob) pairs of one `configs` entry, in any of the forms datasets accepts."""
    files = config.get("data_files")
    if isinstance(files, str):
        return [("train", files)]
    pairs = []
    for item in files or []:
        if isinstance(item, str):
            pairs.append(("train", item))
        else:
            for pattern in [item["path"]] if isinstance(item.get("path"), str) else item.get("path") or []:
                pairs.append((item.get("split", "train"), pattern))
    return pairs


def check_folder(folder: Path) -> FolderCheck:
    from huggingface_hub import DatasetCard
    from huggingface_hub.utils import filter_repo_objects

    from factory.card import REQUIRED_KEYS

    check = FolderCheck(folder)
    check.files = sorted(
        (rel, (folder / rel).stat().st_size)
        for rel in filter_repo_objects(
            [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()], ignore_patterns=NOT_UPLOADED
        )
    )
    readme = folder / "README.md"
    if not readme.is_file():
        check.errors.append("README.md (the dataset card) is missing")
        return check
    try:
        card = DatasetCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=False)
    except Exception as e:  # the Hub rejects a card whose header does not parse
        check.errors.append(f"README.md header does not parse: {e}")
        return check
    header = card.data.to_dict()
    missing = [key for key in REQUIRED_KEYS if not header.get(key)]
    if missing:
        check.errors.append(f"README.md header lacks {missing}")
        return check
    info = header["dataset_info"]
    features = [f["name"] for f in info.get("features", [])]
    expected = {s["name"]: s["num_examples"] for s in info.get("splits", [])}

    referenced: set[str] = set()
    data_files = [p for p, _ in check.files if p.endswith(".parquet")]
    for config in header["configs"]:
        for split, pattern in _data_files(config):
            matched = [p for p in data_files if fnmatch.fnmatch(p, pattern)]
            if not matched:
                check.errors.append(f"configs: split {split!r} names {pattern!r}, which matches no file")
            referenced.update(matched)
            check.rows[split] = check.rows.get(split, 0) + sum(_read(folder / p, features, check) for p in matched)
            _check_shard_set(split, matched, check)
    for path in sorted(set(data_files) - referenced):
        check.errors.append(f"{path}: a Parquet file no config names (left from an older shard run?)")
    if check.rows != expected:
        check.errors.append(f"rows per split {check.rows} differ from the card's dataset_info {expected}")
    for link in IMAGE_LINK.findall(card.text):
        if "://" not in link and not (folder / link).is_file():
            check.errors.append(f"README.md shows {link}, which is not in the folder")
    return check


def _read(path: Path, features: list[str], check: FolderCheck) -> int:
    """Read a shard whole (in batches, so memory stays bounded); its row count, 0 when unreadable."""
    import pyarrow.parquet as pq

    rel = path.relative_to(check.folder).as_posix()
    try:
        shard = pq.ParquetFile(path)
        names = shard.schema_arrow.names
        rows = sum(batch.num_rows for batch in shard.iter_batches(batch_size=1024))
    except Exception as e:  # any decoding failure means the Hub's viewer and load_dataset fail too
        check.errors.append(f"{rel}: cannot be read as Parquet ({e})")
        return 0
    if names != features:
        check.errors.append(f"{rel}: columns {names} differ from the card's {features}")
    return rows


def _check_shard_set(split: str, paths: list[str], check: FolderCheck) -> None:
    """Shards named -NNNNN-of-NNNNN must all be there, numbered 0..n-1 with one n."""
    found = [m for m in (SHARD_NAME.fullmatch(posixpath.basename(p)) for p in paths) if m]
    totals = {int(m["n"]) for m in found}
    if len(totals) > 1:
        check.errors.append(f"split {split!r}: shards disagree on their count {sorted(totals)}")
    elif totals and sorted(int(m["i"]) for m in found) != list(range(totals.pop())):
        check.errors.append(f"split {split!r}: shards {sorted(int(m['i']) for m in found)} are not 0..n-1 of n")


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _retrying(call: Callable, what: str, progress: Progress, attempts: int = 5):
    """Retry a call on 429/5xx. huggingface_hub backs off on its preupload and commit requests, but
    create_repo and create_branch send once; a rate limit there would end the publish."""
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(attempts):
        try:
            return call()
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status not in RETRY_STATUS or attempt == attempts - 1:
                raise
            after = e.response.headers.get("Retry-After", "")
            wait = float(after) if after.isdigit() else min(2**attempt, 8)  # seconds, or an HTTP date: back off
            progress(f"publish: {what} answered HTTP {status}; retrying in {wait:g}s")
            time.sleep(wait)


def publish(
    path: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    progress: Progress = print,
) -> dict:
    """Check the dataset folder at `path` (a run directory or the folder itself) and upload it."""
    from factory import stats

    folder = dataset_folder(path)
    with local_copy(folder) as local:
        check = check_folder(local)
        check.raise_if_bad()
        target = f"{repo_id}@{revision or 'main'} ({'private' if private else 'public'})"
        if dry_run:
            progress(f"publish (dry run): the folder checks out; would upload to {target}:\n{check.summary()}")
            return {"repo_id": repo_id, "revision": revision, "dry_run": True,
                    "files": len(check.files), "rows": check.rows}
        entry = _upload(local, check, repo_id, private, revision, commit_message, target, progress)
    if folder.uri != RunDir(path).uri:  # a run directory: its stats.json gets the publish entry
        stats.record(RunDir(path), "publish", entry)
    return entry


def _upload(local: Path, check: FolderCheck, repo_id, private, revision, commit_message, target, progress) -> dict:
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise FactoryError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    start = time.perf_counter()
    # HF_ENDPOINT read now, not at huggingface_hub's import, so it can be set after other imports.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        progress(f"publish: uploading {len(check.files)} file(s) to {target}")
        url = _retrying(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
                        "create_repo", progress)
        if revision and revision != "main":
            _retrying(lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True),
                      "create_branch", progress)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=local,
            revision=revision,
            commit_message=commit_message or "Upload dataset with the distillation data factory",
            ignore_patterns=list(NOT_UPLOADED),  # copies: upload_folder extends the list it gets
            delete_patterns=list(STALE_PATTERNS),
        )
    except Exception as e:  # the Hub client's errors carry URLs and server text, scrubbed of the token
        raise FactoryError(f"publish to {repo_id} failed: {type(e).__name__}: {_redact(str(e), token)}") from None
    entry = {
        "repo_id": repo_id,
        "revision": revision or "main",
        "private": private,
        "url": str(url),
        "commit": commit.oid,
        "files": len(check.files),
        "bytes": sum(size for _, size in check.files),
        "rows": check.rows,
        "seconds": round(time.perf_counter() - start, 2),
    }
    progress(f"publish: {url} at commit {commit.oid}")
    return entry
