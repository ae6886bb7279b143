"""Uploading a saved model folder to the Hub in one commit.

The Hub cannot be reached from our CI: tests stop at the network boundary, checking the exact
commit operations huggingface_hub would send (`tests/hub/test_hub.py`).
"""

from __future__ import annotations

import os

from huggingface_hub import CommitOperationAdd, HfApi

REQUIRED_FILES = ("config.json", "model.safetensors", "README.md")


def commit_operations(folder: str) -> list[CommitOperationAdd]:
    """One `CommitOperationAdd` per file of a saved model folder (weights, configs, processor,
    card, remote code), refusing a folder that lacks a model."""
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete saved model folder: missing {missing}")
    operations = []
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if name.startswith(".") or "__pycache__" in root:
                continue
            path = os.path.join(root, name)
            operations.append(CommitOperationAdd(path_in_repo=os.path.relpath(path, folder).replace(os.sep, "/"), path_or_fileobj=path))
    return operations


def push_folder(folder: str, repo_id: str, *, commit_message: str = "Upload model", private: bool | None = None,
                token: str | None = None, api: HfApi | None = None):
    """Create `repo_id` if needed and upload every file of `folder` in a single commit."""
    api = api or HfApi(token=token)
    operations = commit_operations(folder)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.create_commit(repo_id=repo_id, repo_type="model", operations=operations, commit_message=commit_message)
