"""Transport: getting files onto this machine, verified.

Hub files use huggingface_hub as it is (``hf_hub_download``: its cache, revisions, progress bars,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``). Plain URLs (the paper's released checkpoints) go to our
own small cache with the same rules: verify the sha256 before use, or record it on first use
when the index pins none (trust on first use). A file that fails verification is deleted, so
the cache never keeps bad bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from .._io import atomic_path, atomic_write_json, sha256_of
from ..errors import DownloadError, IntegrityError, InvalidArgumentError

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
        raise InvalidArgumentError(f"{uri!r} is not a hub address; write hf://ORG/NAME/path.json or hf://ORG/NAME@REVISION/path.json")
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
    atomic_write_json(_trust_path(), records)
    return record


def forget_trust(key: str) -> None:
    records = trust_records()
    if records.pop(key, None) is not None:
        atomic_write_json(_trust_path(), records)


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
    """Stream ``url`` to ``target`` with huggingface_hub's downloader (progress bar, retries),
    through a temporary file beside it that is renamed into place only when complete."""
    from huggingface_hub.file_download import http_get

    try:
        with atomic_path(target) as temporary, open(temporary, "wb") as handle:
            http_get(url, handle, displayed_filename=target.name)
    except OSError as exc:  # connection errors, HTTP errors (HfHubHTTPError is an OSError)
        raise DownloadError(
            f"cannot download {url} ({exc}); check your network, or fetch the file yourself and "
            "use a local index entry (source kind 'local')"
        ) from None
