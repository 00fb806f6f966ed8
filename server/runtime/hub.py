"""The Hugging Face Hub side of model references: fetch into, list and prune ``huggingface_hub``'s
cache. Only this module imports ``huggingface_hub`` (lazily: serving local files never needs it).

Network failures fall back to the cache, so a reference that was pulled once resolves offline
(and with ``HF_HUB_OFFLINE=1`` the hub is never asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import ConfigError
from backends.formats import detect_format, gguf_file_type_name
from backends.gguf_header import GGUFError, read_header
from backends.memplan import available_memory
from backends.types import ModelFormat
from server.runtime.model_refs import CHECKPOINT_PATTERNS, HubRef, pick_gguf, quant_of, split_parts

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One model in a local cache, as ``quantserve list`` shows it."""

    ref: str
    path: Path
    size: int
    format: str
    quantization: str


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_folder(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def _cached_snapshot(ref: HubRef) -> Path | None:
    """The cached snapshot directory of ``ref``'s revision, if there is one."""
    folder = _repo_folder(ref.repo_id)
    ref_file = folder / "refs" / ref.revision
    commit = ref_file.read_text().strip() if ref_file.is_file() else ref.revision
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _cached_sizes(ref: HubRef) -> dict[str, int] | None:
    snapshot = _cached_snapshot(ref)
    if snapshot is None:
        return None
    return {p.relative_to(snapshot).as_posix(): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}


def _unreachable(exc: BaseException) -> bool:
    """A failure that means "no hub right now" (offline mode, no route, timeout), not "no such model"."""
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(exc, (OfflineModeIsEnabled, httpx2.ConnectError, httpx2.TimeoutException, ConnectionError))


def _hub_error(ref: HubRef, exc: Exception) -> ConfigError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return ConfigError(f"{ref.repo_id} is gated: accept its terms on the hub and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ConfigError(f"model repo {ref.repo_id!r} not found on the hub (a private repo needs HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return ConfigError(f"{ref.repo_id} has no revision {ref.revision!r}")
    if isinstance(exc, EntryNotFoundError):
        return ConfigError(f"{ref}: no such file in {ref.repo_id}")
    if _unreachable(exc):
        return ConfigError(f"{ref} is not cached and the hub ({constants.ENDPOINT}) cannot be reached: {exc}")
    return ConfigError(f"{ref}: the hub answered {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def _listing(ref: HubRef, download: bool) -> dict[str, int]:
    """File -> size in the repo: from the hub, else (offline) from the cache."""
    from huggingface_hub import HfApi

    if download:
        try:
            # model_info, not list_repo_tree: the tree listing retries a refused connection five
            # times with backoff (~23 s) before an offline user gets the cached copy.
            info = HfApi().model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
            return {s.rfilename: int(s.size or 0) for s in info.siblings or ()}
        except Exception as exc:
            if not _unreachable(exc):
                raise _hub_error(ref, exc) from None
            cached = _cached_sizes(ref)
            if cached is None:
                raise _hub_error(ref, exc) from None
            log.info("hub unreachable (%s); using the cached %s", type(exc).__name__, ref.repo_id)
            return cached
    cached = _cached_sizes(ref)
    if cached is None:
        raise ConfigError(f"{ref} is not cached; fetch it with: quantserve pull {ref}")
    return cached


def fetch(ref: HubRef, *, download: bool = True) -> Path:
    """The local path of ``ref``: a GGUF file (first part of a split), or a checkpoint directory."""
    if ref.filename is not None:
        return _download_files(ref, split_parts(ref.filename), download)
    sizes = _listing(ref, download)
    if any(f.lower().endswith(".gguf") for f in sizes):
        first = pick_gguf(ref, sizes, available_memory())
        return _download_files(ref, split_parts(first, list(sizes)), download)
    if ref.quant is not None:
        raise ConfigError(f"{ref.repo_id} has no GGUF files, so :{ref.quant} cannot pick one")
    if "config.json" not in sizes:
        raise ConfigError(f"{ref.repo_id} has neither GGUF files nor a config.json: not a model this server can run")
    return _download_checkpoint(ref, download)


def _download_files(ref: HubRef, files: list[str], download: bool) -> Path:
    from huggingface_hub import hf_hub_download

    paths = []
    for name in files:
        try:
            if download:
                log.info("fetching %s from %s", name, ref.repo_id)
            found = hf_hub_download(ref.repo_id, name, revision=ref.revision, local_files_only=not download)
        except Exception as exc:
            if not download:
                raise ConfigError(f"{ref} is not cached; fetch it with: quantserve pull {ref}") from None
            raise _hub_error(ref, exc) from None
        paths.append(Path(found))
    return paths[0]


def _download_checkpoint(ref: HubRef, download: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        found = snapshot_download(
            ref.repo_id, revision=ref.revision, allow_patterns=list(CHECKPOINT_PATTERNS), local_files_only=not download
        )
    except Exception as exc:
        if not download:
            raise ConfigError(f"{ref} is not cached; fetch it with: quantserve pull {ref}") from None
        raise _hub_error(ref, exc) from None
    return Path(found)


def describe_path(path: Path) -> tuple[str, str]:
    """(format, quantization) of a local model path, or ("?", "?") when it is not a model."""
    try:
        fmt = detect_format(path)
    except ConfigError:
        return "?", "?"
    if fmt is not ModelFormat.GGUF:
        return fmt.value, "none" if fmt is ModelFormat.SAFETENSORS else fmt.value
    return fmt.value, quant_of(path.name) or _gguf_file_type(path)


def _gguf_file_type(path: Path) -> str:
    """The file type the GGUF declares (a split GGUF's first part holds it)."""
    try:
        return gguf_file_type_name(read_header(path).metadata.get("general.file_type"), "?")
    except (GGUFError, OSError):
        return "?"


def cached_models(models_dir: Path | None = None) -> list[CachedModel]:
    """Models in the hub cache (one row per GGUF quantization or checkpoint) and in ``models_dir``."""
    from huggingface_hub import scan_cache_dir

    rows: list[CachedModel] = []
    cache = hub_cache()
    repos = scan_cache_dir(cache).repos if cache.is_dir() else frozenset()
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: -r.last_modified)[:1]:
            rows += _repo_rows(repo.repo_id, rev)
    if models_dir is not None and models_dir.is_dir():
        for path in sorted(models_dir.iterdir()):
            if path.name.startswith(".") or not (path.suffix == ".gguf" or (path / "config.json").is_file()):
                continue
            fmt, quant = describe_path(path)
            size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*"))
            rows.append(CachedModel(str(path), path, size, fmt, quant))
    return rows


def _repo_rows(repo_id: str, rev: Any) -> list[CachedModel]:
    files = {_rel(rev, f): f for f in rev.files}
    ggufs = [n for n in files if n.lower().endswith(".gguf")]
    rows = []
    for name in sorted(ggufs):
        parts = split_parts(name)
        if parts[0] != name:
            continue
        size = sum(files[p].size_on_disk for p in parts if p in files)
        quant = quant_of(name)
        ref = f"{repo_id}:{quant}" if quant else f"hf://{repo_id}/{name}"
        rows.append(CachedModel(ref, Path(files[name].file_path), size, "gguf", quant or "?"))
    if not ggufs and "config.json" in files:
        fmt, quant = describe_path(Path(rev.snapshot_path))
        rows.append(CachedModel(repo_id, Path(rev.snapshot_path), int(rev.size_on_disk), fmt, quant))
    return rows


def _rel(rev: Any, f: Any) -> str:
    return str(Path(f.file_path).relative_to(rev.snapshot_path).as_posix())


def remove(ref: HubRef) -> int:
    """Delete ``ref`` from the hub cache: the whole repo, or only the files a quantization or a
    file name picks. Returns the bytes freed."""
    from huggingface_hub import scan_cache_dir

    cache = hub_cache()
    info = scan_cache_dir(cache) if cache.is_dir() else None
    repo = next((r for r in (info.repos if info else ()) if r.repo_id == ref.repo_id and r.repo_type == "model"), None)
    if info is None or repo is None:
        raise ConfigError(f"{ref.repo_id} is not in the cache ({cache})")
    if ref.quant is None and ref.filename is None:
        strategy = info.delete_revisions(*(rev.commit_hash for rev in repo.revisions))
        strategy.execute()
        return int(strategy.expected_freed_size)
    freed = 0
    removed = False
    for rev in repo.revisions:
        names = {_rel(rev, f): f for f in rev.files}
        picked = [n for n in names if n == ref.filename or (ref.quant and quant_of(n) == ref.quant.upper())]
        for name in picked:
            f = names[name]
            still_used = any(
                o.blob_path == f.blob_path and o.file_path != f.file_path for r in repo.revisions for o in r.files
            )
            Path(f.file_path).unlink()
            if not still_used and Path(f.blob_path).exists():
                freed += f.size_on_disk
                Path(f.blob_path).unlink()
            removed = True
    if not removed:
        raise ConfigError(f"{ref} is not in the cache")
    return freed
