"""Find the teacher before any Ray work starts, so a missing model fails in seconds, not after engine start."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from factory.errors import ConfigError


def _hint(model: str) -> str:
    return (
        f"Download it on a machine that can reach the Hub (`hf download {model} --local-dir DIR`), "
        f"then run with --set teacher.model=DIR."
    )


def check_model(model: str, revision: str | None = None) -> None:
    """A local folder must hold config.json; a Hub id must be cached or fetchable (its config.json is fetched)."""
    if Path(model).exists():
        if not (Path(model) / "config.json").is_file():
            raise ConfigError(f"teacher.model: {model} has no config.json (not a Hugging Face model folder)")
        return
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"teacher.model: {model} is not in the local cache and HF_HUB_OFFLINE is set. {_hint(model)}")
    host = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT)).hostname
    try:
        socket.getaddrinfo(host, 443)  # fails at once where huggingface_hub would retry for ~25 s
    except OSError:
        raise ConfigError(f"teacher.model: {model} is not a local folder and {host} cannot be reached. {_hint(model)}") from None
    try:
        hf_hub_download(model, "config.json", revision=revision)
    except Exception as e:  # the Hub's errors are many (gated, missing, network); all mean the same here
        raise ConfigError(f"teacher.model: cannot fetch {model} from the Hub ({type(e).__name__}). {_hint(model)}") from None
