"""Transport: getting files onto this machine, verified.

Hub files use huggingface_hub as it is (``hf_hub_download``: its cache, revisions, progress bars,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``). Plain URLs (the paper's released checkpoints) go to our
own small cache with the same rules: verify the sha256 before use, or record it on first use
when the index pins none (trust on first use) and enforce it afterwards. A file that fails
verification is deleted, so the cache never keeps bad bytes; a record is never replaced by a
download that does not match it (``forget_trust`` is the one explicit way, ``--retrust``).

``$ICMH_HUB_URL_MIRROR`` serves URL sources from a static copy: ``https://HOST/PATH`` is fetched
from ``$ICMH_HUB_URL_MIRROR/HOST/PATH``; the cache and the records keep the original URL, so the
mirror must serve the same bytes. Downloads are written to a hidden temporary file renamed into
place only when complete, under a per-file lock; a process killed mid-download leaves only that
temporary file, which the next download of the same file removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from .._io import PARTIAL_SUFFIX, atomic_path, atomic_write_json, parse_json, sha256_of
from ..core.names import escaped
from ..errors import DownloadError, IntegrityError, InvalidArgumentError
from .schema import plain_file_name

CACHE_ENV = "ICMH_HUB_CACHE"
MIRROR_ENV = "ICMH_HUB_URL_MIRROR"
RETRUST_HINT = "`icmh-hub download ENTRY --retrust` (ENTRY: one that uses it, see `icmh-hub list`)"
_TRUST_FILE = "trust.json"
_MAX_RESTARTS = 2  # downloads started again from byte 0 after a dropped connection, before giving up
_SHA256 = re.compile(r"[0-9a-f]{64}")
DEADLINE_ENV = "ICMH_HUB_DOWNLOAD_DEADLINE"
DEFAULT_DEADLINE_S = 3600.0  # a whole download, on top of huggingface_hub's stall timeout (HF_HUB_DOWNLOAD_TIMEOUT)
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


def verify(path: Path, sha256: str | None, size: int | None = None, what: str = "", remove: bool = True,
           first_use: str | None = None) -> str:
    """Check ``path`` against a pinned sha256 (and size); return its sha256.

    On a mismatch the file is deleted (with ``remove``; never for a user's own local file), so
    that the next download starts clean, and IntegrityError says so. ``first_use``: the date the
    expected sha256 was recorded, when it was not pinned by an index but trusted on first use.
    """
    actual = sha256_of(path)
    actual_size = path.stat().st_size
    bad = (sha256 is not None and actual != sha256.lower()) or (size is not None and actual_size != size)
    if bad:
        if remove:
            remove_cached(path)
        kept = "it was removed from the cache, so a retry downloads it again" if remove else "the file was left in place"
        if first_use:
            raise IntegrityError(
                f"sha256 mismatch for {what or path}: expected {sha256} (recorded on first use, {first_use}), got "
                f"{actual} ({actual_size} bytes): not the file first used here; {kept}, and the record was kept. "
                f"If the publisher replaced the file on purpose, accept the new one with {RETRUST_HINT}; otherwise report it"
            )
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
        with quiet_hub():
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


def mirrored(url: str) -> str:
    """The address ``url`` is fetched from: itself, or ``$ICMH_HUB_URL_MIRROR/HOST/PATH``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    if urlparse(mirror).scheme not in ("http", "https") or not urlparse(mirror).netloc:
        raise InvalidArgumentError(
            f"${MIRROR_ENV} is {mirror!r}; set it to the http:// or https:// address of a static copy of the "
            "files (https://HOST/PATH is fetched from $ICMH_HUB_URL_MIRROR/HOST/PATH), or unset it"
        )
    parts = urlparse(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def _url_folder(url: str, sha256: str | None = None) -> Path:
    """The cache folder of ``url``: a pinned download has its own (keyed by URL and sha256), so a
    pinned and an unpinned entry of one URL never share, replace or vouch for each other's file."""
    key = url if sha256 is None else f"{url}#sha256={sha256.lower()}"
    return cache_dir() / "urls" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _trust_path() -> Path:
    return cache_dir() / _TRUST_FILE


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold ``target``'s lock (one process at a time downloads, converts or records it). Under it,
    temporary files of ``target`` (``atomic_path``'s ``.NAME.XXXXXXXX.partial``) belong to no live
    writer: a killed process left them, so they are removed."""
    from huggingface_hub.utils import WeakFileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(target.with_name(f".{target.name}.lock")):
        stale = re.compile(rf"^\.{re.escape(target.name)}\.[^.]+{re.escape(PARTIAL_SUFFIX)}$")
        for item in target.parent.iterdir():
            if stale.match(item.name):
                item.unlink(missing_ok=True)
        yield


def trust_records() -> dict[str, dict[str, Any]]:
    """What was recorded on first use for unpinned files: key -> {sha256, size, first_used}."""
    path = _trust_path()
    try:
        records = parse_json(path.read_bytes(), "trust.json", IntegrityError)
    except FileNotFoundError:
        return {}
    except (OSError, IntegrityError) as exc:
        records = exc
    problem = str(records) if isinstance(records, Exception) else _records_problem(records)
    if problem:  # never a silent fresh start: that would trust anything anew
        raise IntegrityError(
            f"the trust records {path} are damaged ({problem}); restore the file, or delete it to forget every "
            "sha256 recorded on first use (the next downloads are then trusted anew)"
        )
    return records


def _records_problem(records: Any) -> str:
    """What is wrong with the content of trust.json, or "" (every record: a sha256, a size, a date)."""
    if not isinstance(records, dict):
        return f"not an object but {type(records).__name__}"
    for key, record in records.items():
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str) and _SHA256.fullmatch(record["sha256"])
                and isinstance(record.get("size"), int) and isinstance(record.get("first_used"), str)):
            return f"the record of {escaped(key, 100)} is not {{sha256: 64 hex digits, size: bytes, first_used: date}}"
    return ""


def record_trust(key: str, path: Path, **extra: Any) -> dict[str, Any]:
    """Record the sha256 of ``path`` under ``key`` (first use); later uses are checked against it."""
    record = {"sha256": sha256_of(path), "size": path.stat().st_size, "first_used": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    with locked(_trust_path()):
        atomic_write_json(_trust_path(), trust_records() | {key: record})
    return record


def converted_key(url: str, task: str | None, pinned: str | None = None) -> str:
    """The trust record of the adapter file converted from the checkpoint at ``url`` for ``task``
    (pinned checkpoints' conversions have records of their own)."""
    return f"converted:{url}#{task}" + (f"@{pinned.lower()}" if pinned else "")


def forget_trust(key: str) -> None:
    """Drop what was recorded for ``key``: its next download is trusted anew (``--retrust``)."""
    with locked(_trust_path()):
        records = trust_records()
        if records.pop(key, None) is not None:
            atomic_write_json(_trust_path(), records)


def url_target(url: str, name: str | None = None, sha256: str | None = None) -> Path:
    """Where ``fetch_url`` keeps the download of ``url`` (pinned to ``sha256``, or not) in the cache."""
    if name is not None and not plain_file_name(name):
        raise InvalidArgumentError(f"download name {name!r} for {url} must be a plain file name (no folder, not hidden)")
    from_url = PurePosixPath(urlparse(url).path).name
    return _url_folder(url, sha256) / (name or (from_url if plain_file_name(from_url) and from_url != ".." else "download"))


def fetch_url(url: str, sha256: str | None = None, name: str | None = None, check: Callable[[Path], None] | None = None,
              deadline: float | None = None) -> Path:
    """Download ``url`` into the icmh-hub cache (with a progress bar) and return the verified file.

    With ``sha256`` the file must match it. Without one (the index pins none), the sha256 seen
    the first time is recorded and every later use must match it: trust on first use, which
    ``icmh-hub info`` states plainly. Before anything is recorded, ``check(path)`` must accept the
    bytes (raising otherwise: an HTML error page is not a checkpoint); a cached file that neither
    a pin nor a record vouches for is downloaded again, never used. A file that fails is deleted
    before the error is raised; a record stays, so a server that changed its file is refused until
    ``--retrust``. ``deadline``: seconds for the whole download (default ``$ICMH_HUB_DOWNLOAD_DEADLINE``).
    """
    target = url_target(url, name, sha256)
    with locked(target):
        record = None if sha256 else trust_records().get(url)
        expected = sha256 or (record or {}).get("sha256")
        first_use = record["first_used"] if record else None
        if target.is_file() and expected is not None:
            verify(target, expected, what=url, first_use=first_use)
            return target
        remove_cached(target)  # not there, or there without a record: nothing vouches for it
        if offline():
            raise DownloadError(
                f"cannot get {url}: HF_HUB_OFFLINE is set and it is not in the cache ({target.parent}); "
                "unset HF_HUB_OFFLINE once to download it"
            )
        address = mirrored(url)
        _download(address, target, download_deadline(deadline))
        verify(target, expected, what=url if address == url else f"{url} (from {address})", first_use=first_use)
        if expected is None:
            _checked(target, check)
            record_trust(url, target)
    return target


def _checked(path: Path, check: Callable[[Path], None] | None) -> None:
    """``check(path)``, deleting the file when it refuses."""
    if check is None:
        return
    try:
        check(path)
    except BaseException:
        remove_cached(path)
        raise


def download_deadline(seconds: float | None = None) -> float:
    """Seconds a whole download may take: ``seconds``, else ``$ICMH_HUB_DOWNLOAD_DEADLINE``, else an hour."""
    text = str(seconds) if seconds is not None else os.environ.get(DEADLINE_ENV, str(DEFAULT_DEADLINE_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and value < float("inf")):
        raise InvalidArgumentError(f"download deadline {text!r}: give seconds > 0, e.g. {DEADLINE_ENV}=600")
    return value


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed download raises: OSError (connection errors, huggingface_hub's HTTP errors)
    and the errors of the HTTP client huggingface_hub uses (httpx's are not OSErrors)."""
    try:
        from huggingface_hub.utils import httpx
    except ImportError:  # huggingface_hub < 1 used requests, whose errors are OSErrors
        return (OSError,)
    return (OSError, httpx.HTTPError)


class _RestartLimited(io.BufferedWriter):
    """A download's temporary file. huggingface_hub's ``http_get`` resumes a dropped connection
    with a Range request, and starts again from byte 0 (truncating this file) when the server
    ignores Range; against a server that keeps dropping the connection that would go on for
    ever, so after ``_MAX_RESTARTS`` restarts the download fails instead."""

    def __init__(self, path: Path, url: str) -> None:
        super().__init__(io.FileIO(path, "wb"))
        self.url, self.restarts, self.cancelled = url, 0, False

    def write(self, data: Any) -> int:
        if self.cancelled:  # the download passed its deadline: the thread running it stops here
            raise DownloadError(f"download of {self.url} cancelled")
        return super().write(data)

    def truncate(self, size: int | None = None) -> int:
        self.restarts += 1
        if self.restarts > _MAX_RESTARTS:
            raise DownloadError(
                f"cannot download {self.url}: the server dropped the connection {self.restarts} times and does not "
                "resume (no Range support); retry later, or fetch the file yourself and use a local index entry"
            )
        return super().truncate(size)


# huggingface_hub's http_get retries a connection that fails before any data came 5 times, a
# second apart; 0 fails at once. Once data flows it resumes dropped connections as before.
_NO_RETRY_BEFORE_DATA = {"_nb_retries": 0}


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """huggingface_hub's log lines (a warning per retry, "Max retries exceeded.") held back in
    the block: what failed is raised as one DownloadError line instead. Progress bars stay."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _download(url: str, target: Path, deadline: float) -> None:
    """Stream ``url`` to ``target`` with huggingface_hub's downloader (progress bar, resumed after
    a dropped connection), through a temporary file beside it that is renamed into place only
    when complete: a partial download is never taken for the file. The download runs in a thread
    so that a server trickling bytes (which never trips the stall timeout) is given up after
    ``deadline`` seconds; that thread stops at its next write."""
    via = f" (${MIRROR_ENV} is set)" if os.environ.get(MIRROR_ENV, "").strip() else ""
    try:
        with atomic_path(target) as temporary, _RestartLimited(temporary, url) as handle, quiet_hub():
            _within_deadline(url, handle, target.name, deadline)
    except DownloadError:
        raise
    except _transport_errors() as exc:
        first = " ".join(str(exc).split())[:300]
        raise DownloadError(
            f"cannot download {url}{via} ({type(exc).__name__}: {first}); check your network or the mirror, "
            "or fetch the file yourself and use a local index entry (source kind 'local')"
        ) from None


def _within_deadline(url: str, handle: _RestartLimited, name: str, deadline: float) -> None:
    """``http_get(url, handle)`` in a thread, waited for at most ``deadline`` seconds; its error is re-raised here."""
    from huggingface_hub.file_download import http_get

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            http_get(url, handle, displayed_filename=name, **_NO_RETRY_BEFORE_DATA)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name=f"download {name}", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        handle.cancelled = True
        raise DownloadError(
            f"cannot download {url}: not complete after {deadline:g} s ({handle.tell():,} bytes written); the server is too slow. "
            f"Retry later, allow more time with ${DEADLINE_ENV}=SECONDS, or fetch the file yourself and use a local index entry"
        )
    if outcome:
        raise outcome[0]
