"""The Hub layer: every byte icmh-hub downloads or uploads goes through here.

Hub files use huggingface_hub as it is (``hf_hub_download``: its cache, revisions, progress bars,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``); uploads are one ``HfApi.create_commit``. Plain URLs (the
paper's released checkpoints) go to our own small cache with the same rules: verify the sha256
before use, or record it on first use when the index pins none (trust on first use). A file that
fails verification is deleted, so the cache never keeps bad bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from .adapter_files import read_metadata, sha256_of
from .errors import DownloadError, IcmhError, IntegrityError

CACHE_ENV = "ICMH_HUB_CACHE"
_TRUST_FILE = "trust.json"
_HF_URI = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?/(?P<path>.+)$")


# ----------------------------------------------------------------------------- cache and checks


def cache_dir() -> Path:
    """Where URL downloads and converted files live: $ICMH_HUB_CACHE, else ~/.cache/icmh_hub."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "icmh_hub"


def offline() -> bool:
    """True when the user asked for no network (huggingface_hub's HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}


def verify(path: Path, sha256: str | None, size: int | None = None, what: str = "", remove: bool = True) -> str:
    """Check ``path`` against a pinned sha256 (and size); return its sha256.

    On a mismatch the file is deleted (with ``remove``; never for a user's own local file), so
    that the next download starts clean, and IntegrityError says so.
    """
    actual = sha256_of(path)
    actual_size = path.stat().st_size
    bad = (sha256 is not None and actual != sha256.lower()) or (size is not None and actual_size != size)
    if bad:
        if remove:
            remove_cached(path)
        kept = "it was removed from the cache, so a retry downloads it again" if remove else "the file was left in place"
        raise IntegrityError(
            f"sha256 mismatch for {what or path}: expected {sha256} ({size} bytes), got {actual} "
            f"({actual_size} bytes); {kept}. If the publisher changed the file on purpose, update "
            "the index entry (icmh-hub push prints a new one); otherwise report the bad upload"
        )
    return actual


def remove_cached(path: Path) -> None:
    """Delete a cached file; for an HF cache snapshot link, the blob it points to as well."""
    path = Path(path)
    target = path.resolve()
    for item in {path, target}:
        try:
            item.unlink()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- Hugging Face Hub


def parse_hf_uri(uri: str) -> tuple[str, str | None, str]:
    """``hf://ORG/NAME[@REV]/path`` -> (repo_id, revision or None, path)."""
    match = _HF_URI.match(uri)
    if not match:
        raise IcmhError(f"{uri!r} is not a hub address; write hf://ORG/NAME/path.json or hf://ORG/NAME@REVISION/path.json")
    return match["repo"], match["rev"], match["path"]


def download_hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """``hf_hub_download`` with its errors turned into one-line messages that say what to do."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{filename} from {repo_id}" + (f"@{revision}" if revision else "")
    try:
        # HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE are read now, not when huggingface_hub was imported
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline(),
        ))
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if offline() else "the Hub could not be reached"
        raise DownloadError(
            f"cannot get {where}: {reason} and it is not in the Hugging Face cache; connect to the "
            "network (and unset HF_HUB_OFFLINE) once to download it, or point HF_ENDPOINT at a mirror"
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(f"revision {revision!r} of {repo_id} does not exist on the Hub; check the index entry") from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"hub repository {repo_id} does not exist or is private; check the name, or log in "
            "with `hf auth login` if it is private"
        ) from None
    except EntryNotFoundError:
        raise DownloadError(f"{repo_id} has no file {filename!r} at revision {revision or 'main'}; check the index entry") from None
    except (HfHubHTTPError, OSError) as exc:
        raise DownloadError(f"downloading {where} failed ({exc}); retry, or check HF_ENDPOINT and your network") from None


# ----------------------------------------------------------------------------- plain URLs


def _url_folder(url: str) -> Path:
    return cache_dir() / "urls" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _trust_path() -> Path:
    return cache_dir() / _TRUST_FILE


def trust_records() -> dict[str, dict[str, Any]]:
    """What was recorded on first use for unpinned files: key -> {sha256, size, first_used}."""
    try:
        return json.loads(_trust_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def record_trust(key: str, path: Path, **extra: Any) -> dict[str, Any]:
    """Record the sha256 of ``path`` under ``key`` (first use); later uses are checked against it."""
    records = trust_records()
    record = {"sha256": sha256_of(path), "size": path.stat().st_size, "first_used": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    records[key] = record
    _write_json(_trust_path(), records)
    return record


def forget_trust(key: str) -> None:
    records = trust_records()
    if records.pop(key, None) is not None:
        _write_json(_trust_path(), records)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def url_target(url: str, name: str | None = None) -> Path:
    """Where ``fetch_url`` keeps the download of ``url`` in the cache."""
    return _url_folder(url) / (name or PurePosixPath(urlparse(url).path).name or "download")


def fetch_url(url: str, sha256: str | None = None, name: str | None = None) -> Path:
    """Download ``url`` into the icmh-hub cache (with a progress bar) and return the verified file.

    With ``sha256`` the file must match it. Without one (the index pins none), the sha256 seen
    the first time is recorded and every later use must match it: trust on first use, which
    ``icmh-hub info`` states plainly. A file that fails is deleted before the error is raised.
    """
    target = url_target(url, name)
    pinned = sha256 or trust_records().get(url, {}).get("sha256")
    if target.is_file():
        try:
            verify(target, pinned, what=url)
        except IntegrityError:
            forget_trust(url) if sha256 is None else None
            raise
        return target
    if offline():
        raise DownloadError(f"cannot get {url}: HF_HUB_OFFLINE is set and it is not in the cache ({target.parent}); unset HF_HUB_OFFLINE once to download it")
    _download(url, target)
    verify(target, pinned, what=url)
    if pinned is None:
        record_trust(url, target)
    return target


def _download(url: str, target: Path) -> None:
    """Stream ``url`` to ``target`` through a temporary file with torch.hub's progress bar."""
    from torch.hub import download_url_to_file

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(target), progress=True)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(
            f"cannot download {url} ({exc}); check your network, or fetch the file yourself and "
            "use a local index entry (source kind 'local')"
        ) from None


# ----------------------------------------------------------------------------- push


def entry_for_file(adapter_file: str | os.PathLike, results: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The registry entry of an adapter file (source left empty): what it fits, sha256, size."""
    path = Path(adapter_file)
    meta = read_metadata(path)
    info = meta["info"]
    task = info.get("task")
    if not task:
        raise IcmhError(f"{path} records no task; save it with save_adapters(..., task='cls') before pushing")
    return {
        "id": f"{meta['codec']}/{task}/q{meta['quality']}",
        "codec": meta["codec"],
        "task": task,
        "q": meta["quality"],
        "lmbda": info.get("lmbda"),
        "variant": meta["variant"],
        "middle_dim": meta["middle_dim"],
        "status": "published",
        "source": None,
        "sha256": sha256_of(path),
        "size": path.stat().st_size,
        "metrics": [dict(r) for r in results],
        "notes": "",
    }


def _remote_blob(api: Any, repo_id: str, path: str, revision: str | None) -> Any | None:
    """The file at ``path`` in the repo (a RepoFile), or None when there is none (or no repo)."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        infos = api.get_paths_info(repo_id, [path], revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        return None
    return next((i for i in infos if getattr(i, "path", None) == path and hasattr(i, "blob_id")), None)


def _same_bytes(remote: Any, local: Path, sha256: str) -> bool:
    if getattr(remote, "lfs", None) is not None:
        return remote.lfs.sha256 == sha256
    data = local.read_bytes()  # a regular git blob: compare git's blob id
    return remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def push_adapter(
    adapter_file: str | os.PathLike,
    repo_id: str,
    path: str | None = None,
    revision: str | None = None,
    results: Iterable[Mapping[str, Any]] = (),
    force: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Publish an adapter file and its model card in one atomic commit; return its registry entry.

    The card goes next to the file as README.md. An existing file at ``path`` with different
    bytes is not replaced unless ``force``: published entries pin a sha256 and would break.
    ``dry_run`` checks the file and renders the card but sends nothing.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .model_card import render_card

    local = Path(adapter_file)
    results = [dict(r) for r in results]
    entry = entry_for_file(local, results)
    path = path or local.name
    card_path = str(PurePosixPath(path).parent / "README.md").lstrip("./") or "README.md"
    card = str(render_card(local, results=results, repo_id=repo_id, path_in_repo=path))
    entry["source"] = {"kind": "hub", "repo_id": repo_id, "path": path, "revision": None}
    if dry_run:
        return entry
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = _remote_blob(api, repo_id, path, revision)
        if remote is not None and not force and not _same_bytes(remote, local, entry["sha256"]):
            raise IcmhError(
                f"{repo_id} already has a different {path} at {revision or 'main'}; entries that pin "
                "its sha256 would break. Push to another --path, or pass --force to replace it"
            )
        info = api.create_commit(
            repo_id,
            operations=[
                CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)),
                CommitOperationAdd(path_in_repo=card_path, path_or_fileobj=card.encode()),
            ],
            commit_message=f"Add {entry['id']} adapters ({entry['sha256'][:12]})",
            revision=revision,
        )
    except HfHubHTTPError as exc:
        raise DownloadError(f"push to {repo_id} failed ({exc}); check the repo name, your token (`hf auth login`) and HF_ENDPOINT") from None
    entry["source"]["revision"] = info.oid
    return entry
