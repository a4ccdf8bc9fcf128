"""Publishing: an adapter file and its model card in one atomic Hub commit, and the registry
entry that pins it (sha256, size, revision)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .._io import sha256_of
from ..errors import AdapterFileError, DownloadError, RegistryError
from ..formats.adapter_files import read_metadata


def entry_for_file(adapter_file: str | os.PathLike, results: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The registry entry of an adapter file (source left empty): what it fits, sha256, size."""
    path = Path(adapter_file)
    meta = read_metadata(path)
    info = meta["info"]
    task = info.get("task")
    if not task:
        raise AdapterFileError(f"{path} records no task; save it with save_adapters(..., task='cls') before pushing")
    return {
        "id": f"{meta['codec']}/{task}/q{meta['quality']}" + ("" if meta["method"] == "sfma" else f"/{meta['method']}"),
        "codec": meta["codec"],
        "task": task,
        "q": meta["quality"],
        "lmbda": info.get("lmbda"),
        "variant": meta["method"],
        "middle_dim": meta.get("middle_dim"),
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
    from huggingface_hub.utils.sha import git_hash

    if getattr(remote, "lfs", None) is not None:
        return remote.lfs.sha256 == sha256
    return remote.blob_id == git_hash(local.read_bytes())  # a regular git blob: compare git's blob id


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
    allow_random: bool = False,
) -> dict[str, Any]:
    """Publish an adapter file and its model card in one atomic commit; return its registry entry.

    The card goes next to the file as README.md. An existing file at ``path`` with different
    bytes is not replaced unless ``force``: published entries pin a sha256 and would break.
    ``dry_run`` checks the file and renders the card but sends nothing. Adapters trained against
    a random task model (``--no-pretrained``) are refused unless ``allow_random``.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .card import render_card, trained_against_random

    local = Path(adapter_file)
    if not allow_random and trained_against_random(read_metadata(local)["info"]):
        raise RegistryError(
            f"{local} was trained against a random task model and codec (--no-pretrained): it serves no real task. "
            "Train with pretrained models to publish it, or pass --allow-random (allow_random=True) to publish a trial"
        )
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
            raise RegistryError(
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
