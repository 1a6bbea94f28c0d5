"""vcrpy cassettes as the LLM cache, hardened (design.md §7, pitfalls.md "LLM and cassettes").

vcrpy's defaults are unsafe for an LLM cache: they stored the API key, ``set-cookie`` and
``openai-organization``, wrote gzip bodies as ``!!binary`` and replayed one prompt's
answer for another because the default matchers ignore the body. Here:

* **One cassette per request**, at ``<root>/<key[:2]>/<key>.yaml`` where ``key`` is
  :func:`request_key` (sha256 of method, normalised path and canonical JSON body), so a
  lookup is one ``stat``.
* **Matching** on method, normalised path (the part from ``/chat/completions`` etc.:
  host, port and a base prefix such as ``/v1`` do not matter, so a cassette recorded
  against a fake server on a random port replays against any ``base_url``) and the
  canonical body (key order does not matter, every field's value does). Never headers.
* **Scrubbing**: request headers are reduced to ``content-type``; response headers to a
  short allow-list. Secrets (``authorization``, ``api-key``, cookies, organisation and
  project) are also named explicitly, so they are dropped even if the allow-list grows.
  Volatile headers (``x-request-id``, ``date``, ``openai-processing-ms``, rate-limit
  counters) are dropped so an unchanged re-record is byte-identical. The host is
  replaced by ``llm.invalid``.
* **Never stored**: responses with status >= 400, streams that did not finish (no
  ``data: [DONE]``), and bodies that are not UTF-8 text after decompression.
* **Deterministic YAML** (sorted keys, block literals for multi-line bodies, the pure
  Python emitter so libyaml's presence does not change the bytes) and **atomic writes**
  (temp file + ``os.replace``), so a crash never leaves a half-written cassette.
* **Housekeeping**: last-use times in ``<root>/.mulm-index.json`` (file lock, atomic
  replace; hits are buffered in memory and written by :meth:`CassetteStore.flush`),
  :meth:`CassetteStore.stats` and :meth:`CassetteStore.prune` (age limit, then LRU down
  to a size cap; files missing from the index fall back to their mtime).

The ``openai`` SDK (3.x) sends through ``httpx2``, which vcrpy >= 9.4 patches (as it does
``httpx``). A replay miss raises :class:`CassetteMissError` out of :meth:`CassetteStore.use`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import vcr
import yaml
from filelock import FileLock
from vcr.errors import CannotOverwriteExistingCassetteException
from vcr.filters import decode_response
from vcr.persisters.filesystem import CassetteDecodeError, CassetteNotFoundError
from vcr.request import Request as VcrRequest
from vcr.serialize import deserialize as vcr_deserialize
from vcr.serialize import serialize as vcr_serialize

from ..atomic import write_atomic
from ..errors import MulmError

__all__ = [
    "INDEX_NAME",
    "KEPT_REQUEST_HEADERS",
    "KEPT_RESPONSE_HEADERS",
    "SENSITIVE_HEADERS",
    "AtomicPersister",
    "CassetteError",
    "CassetteMissError",
    "CassetteStore",
    "DeterministicYamlSerializer",
    "canonical_body",
    "normalise_path",
    "request_key",
    "secrets_in",
]

log = logging.getLogger(__name__)

INDEX_NAME = ".mulm-index.json"
_LOCK_NAME = ".mulm-index.lock"
# part of every key: a change to how keys are computed must not reuse old cassettes
_KEY_VERSION = "mulm-cassette-v1"
# stands in for the recorded host and port, which change between runs and may be private
_PLACEHOLDER_ORIGIN = "https://llm.invalid"

SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
        "set-cookie",
    }
)
# everything else a real API sends is volatile (x-request-id, date, openai-processing-ms,
# x-ratelimit-*, cf-ray, ...) or transport (content-length, transfer-encoding): an
# allow-list keeps unknown future headers out instead of chasing them in a deny-list
KEPT_REQUEST_HEADERS = frozenset({"content-type"})
KEPT_RESPONSE_HEADERS = frozenset({"content-type", "openai-version", "openai-model"})

# first path segment of the API's own routes; whatever precedes it is the base URL's prefix
_API_ROOTS = frozenset(
    {
        "chat",
        "completions",
        "embeddings",
        "responses",
        "moderations",
        "models",
        "images",
        "audio",
        "files",
        "batches",
        "uploads",
        "assistants",
        "threads",
        "vector_stores",
        "fine_tuning",
        "deployments",
        "conversations",
        "realtime",
    }
)
_VERSION_SEGMENT = re.compile(r"v\d+[a-z0-9]*")
_KEY_RE = re.compile(r"[0-9a-f]{64}")
# credentials some OpenAI-compatible servers accept in the query string
_SECRET_QUERY = frozenset({"key", "api-key", "api_key", "apikey", "access_token", "token"})

_MODES = {
    "replay": "none",
    "record": "new_episodes",
    "none": "none",
    "once": "once",
    "new_episodes": "new_episodes",
    "all": "all",
}


class CassetteError(MulmError):
    """A cassette could not be written or read as required."""


class CassetteMissError(CassetteError, LookupError):
    """Replay asked for a request that no cassette holds."""

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------
# keys


def canonical_body(body: bytes | str | Mapping[str, Any] | list[Any] | None) -> str:
    """The body as sorted, compact JSON (``ensure_ascii=False``).

    Key order and whitespace do not matter; every value does (``1`` and ``1.0`` stay
    different, which at worst costs a miss). A body that is not JSON is kept as text.
    """
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return "sha256:" + hashlib.sha256(body).hexdigest()
    elif isinstance(body, str):
        text = body
    else:
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not text.strip():
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalise_path(url_or_path: str) -> str:
    """The API route of a URL: ``http://h:1/v1/chat/completions`` -> ``/chat/completions``.

    The prefix up to a version segment (``/v1``, ``/openai/v1``) or, without one, up to
    the first known route (``/api/chat/...``) is dropped. The query is kept sorted, minus
    credential parameters.
    """
    parts = urlsplit(url_or_path)
    segments = [s for s in parts.path.split("/") if s]
    start = next((i + 1 for i, s in enumerate(segments) if _VERSION_SEGMENT.fullmatch(s)), None)
    if start is None:
        start = next((i for i, s in enumerate(segments) if s in _API_ROOTS), 0)
    path = "/" + "/".join(segments[start:])
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _SECRET_QUERY
    )
    return path + ("?" + urlencode(query) if query else "")


def request_key(method: str, path: str, body: bytes | str | Mapping[str, Any] | None) -> str:
    """sha256 (hex) of method, :func:`normalise_path` and :func:`canonical_body`."""
    text = "\n".join((_KEY_VERSION, method.upper(), normalise_path(path), canonical_body(body)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------
# vcrpy hooks (also used by write_response, so both paths store the same thing)


def _match_path(r1: VcrRequest, r2: VcrRequest) -> None:
    a, b = normalise_path(r1.uri), normalise_path(r2.uri)
    if a != b:
        raise AssertionError(f"{a} != {b}")


def _match_body(r1: VcrRequest, r2: VcrRequest) -> None:
    a, b = canonical_body(r1.body), canonical_body(r2.body)
    if a != b:
        raise AssertionError("the canonical JSON bodies differ")


def _scrub_request(request: VcrRequest) -> VcrRequest:
    """Keep only what matching needs: placeholder origin, canonical body, content-type."""
    request.uri = _PLACEHOLDER_ORIGIN + normalise_path(request.uri)
    body = request.body
    if isinstance(body, (bytes, bytearray, str)) or body is None:
        request.body = canonical_body(body).encode("utf-8")
    request.headers = {
        k.lower(): v
        for k, v in request.headers.items()
        if k.lower() in KEPT_REQUEST_HEADERS and k.lower() not in SENSITIVE_HEADERS
    }
    return request


def _complete_stream(body: bytes) -> bool:
    text = body.decode("utf-8", "replace").rstrip()
    if text.endswith("data: [DONE]"):
        return True
    # the Responses API ends its streams with a response.completed event instead
    last = text.rsplit("\n\n", 1)[-1]
    return "event: response.completed" in last or '"type":"response.completed"' in last.replace(
        " ", ""
    )


def _scrub_response(response: dict[str, Any]) -> dict[str, Any] | None:
    """Drop what must not be stored (None) and every header outside the allow-list."""
    status = response.get("status") or {}
    code = status.get("code") if isinstance(status, Mapping) else None
    if not isinstance(code, int) or code >= 400:
        return None  # errors and rate limits are not answers
    headers: dict[str, list[str]] = {}
    for name, values in (response.get("headers") or {}).items():
        lower = name.lower()
        if lower in KEPT_RESPONSE_HEADERS and lower not in SENSITIVE_HEADERS:
            headers.setdefault(lower, []).extend(values if isinstance(values, list) else [values])
    if any(
        lower == "content-encoding" for lower in (n.lower() for n in response.get("headers") or {})
    ):
        log.warning("not stored: the response is still compressed (unsupported content-encoding)")
        return None
    body = (response.get("body") or {}).get("string")
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = body or b""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        # would become !!binary in YAML: nothing an LLM cache needs
        log.warning("not stored: the response body is not UTF-8 text")
        return None
    content_type = ",".join(headers.get("content-type", [])).lower()
    if "text/event-stream" in content_type and not _complete_stream(body):
        return None  # a cut stream replayed later would look like a short answer
    return {
        "status": {"code": code, "message": status.get("message") or ""},
        "headers": headers,
        "body": {"string": body},
    }


class _DeterministicDumper(yaml.SafeDumper):
    """Pure-Python safe dumper: byte-stable output whether or not libyaml is installed."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # multi-line bodies (SSE streams, pretty JSON) as block literals: readable diffs;
    # PyYAML falls back to a quoted scalar by itself where a literal cannot round-trip
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _refuse_bytes(dumper: yaml.SafeDumper, data: bytes) -> yaml.Node:
    raise CassetteError("cassette not written: a body is binary and would be stored as !!binary")


_DeterministicDumper.add_representer(str, _represent_str)
_DeterministicDumper.add_representer(bytes, _refuse_bytes)
_DeterministicDumper.add_representer(bytearray, _refuse_bytes)

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DeterministicYamlSerializer:
    """vcrpy serializer: sorted keys, no line folding, UTF-8 text, round-trip checked."""

    @staticmethod
    def serialize(cassette_dict: dict[str, Any]) -> str:
        text = yaml.dump(
            cassette_dict,
            Dumper=_DeterministicDumper,
            sort_keys=True,
            allow_unicode=True,
            default_flow_style=False,
            width=1_000_000,
        )
        # cheap insurance: what we write must read back as exactly what we meant
        if yaml.load(text, Loader=_Loader) != cassette_dict:
            raise CassetteError("cassette not written: its YAML does not read back identically")
        return text

    @staticmethod
    def deserialize(cassette_string: str) -> Any:
        return yaml.load(cassette_string, Loader=_Loader)


class AtomicPersister:
    """vcrpy persister: atomic writes; unreadable files count as absent; no empty files.

    With ``capture`` (a list), a failed save is appended there instead of raised: vcrpy
    saves in its ``__exit__`` before it removes its patches, so an exception from the
    save would leave httpx patched for the rest of the process. :meth:`CassetteStore.vcr_for`
    raises the captured error once vcrpy has cleaned up.
    """

    def __init__(self, capture: list[BaseException] | None = None) -> None:
        self.capture = capture

    def load_cassette(self, cassette_path: str | os.PathLike[str], serializer: Any) -> Any:
        path = Path(cassette_path)
        try:
            data = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CassetteNotFoundError() from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CassetteDecodeError(f"cannot read cassette {path}: {exc}") from exc
        if not data.strip():
            raise CassetteNotFoundError()
        try:
            return vcr_deserialize(data, serializer)
        except (yaml.YAMLError, ValueError, KeyError, TypeError) as exc:
            raise CassetteDecodeError(f"cannot parse cassette {path}: {exc}") from exc

    def save_cassette(
        self, cassette_path: str | os.PathLike[str], cassette_dict: dict[str, Any], serializer: Any
    ) -> None:
        if not cassette_dict.get("requests"):
            return  # every interaction was filtered out: write nothing rather than an empty shell
        try:
            write_atomic(Path(cassette_path), vcr_serialize(cassette_dict, serializer))
        except Exception as exc:
            if self.capture is None:
                raise
            self.capture.append(exc)


# ---------------------------------------------------------------------------------------
# the last-use index


def _read_index(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("last_use", {})
        return {str(k): float(v) for k, v in entries.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        # missing or damaged: every entry falls back to its file's mtime
        return {}


def _write_index(path: Path, entries: Mapping[str, float]) -> None:
    write_atomic(
        path,
        json.dumps(
            {"version": 1, "last_use": dict(sorted(entries.items()))}, separators=(",", ":")
        ),
    )


def _flush_hits(index: Path, lock: Path, pending: dict[str, float], guard: threading.Lock) -> None:
    """Merge buffered hits into the index (module level: weakref.finalize must not hold the store)."""
    with guard:
        hits = dict(pending)
        pending.clear()
    if not hits or not index.parent.is_dir():
        return
    try:
        with FileLock(str(lock), timeout=30):
            entries = _read_index(index)
            for key, when in hits.items():
                if when > entries.get(key, 0.0):
                    entries[key] = when
            _write_index(index, entries)
    except BaseException:
        with guard:  # try again at the next flush
            for key, when in hits.items():
                pending[key] = max(when, pending.get(key, 0.0))
        raise


# ---------------------------------------------------------------------------------------
# the store


class CassetteStore:
    """Cassettes under ``root``, one per request key; see the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        flush_every: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.flush_every = flush_every
        self.clock = clock
        self._index = self.root / INDEX_NAME
        self._lock_path = self.root / _LOCK_NAME
        self._root_str = os.fspath(self.root)
        self._pending: dict[str, float] = {}
        self._guard = threading.Lock()
        # buffered hits reach the index at interpreter exit too
        self._finalizer = weakref.finalize(
            self, _flush_hits, self._index, self._lock_path, self._pending, self._guard
        )
        self.vcr = self._make_vcr()

    def _make_vcr(self) -> vcr.VCR:
        recorder = vcr.VCR(
            serializer="mulm-yaml",
            match_on=("method", "mulm_path", "mulm_body"),
            filter_headers=sorted(SENSITIVE_HEADERS),
            before_record_request=_scrub_request,
            before_record_response=_scrub_response,
            decode_compressed_response=True,
            record_mode="none",
            record_on_exception=False,
        )
        recorder.register_serializer("mulm-yaml", DeterministicYamlSerializer())
        recorder.register_matcher("mulm_path", _match_path)
        recorder.register_matcher("mulm_body", _match_body)
        recorder.register_persister(AtomicPersister())
        return recorder

    # -- paths and lookups ------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        """``<root>/<key[:2]>/<key>.yaml`` (the key is checked: it becomes a file name)."""
        if not _KEY_RE.fullmatch(key):
            raise CassetteError(f"not a cassette key (64 hex digits expected): {key[:80]!r}")
        return self.root / key[:2] / f"{key}.yaml"

    def lookup(self, key: str) -> Path | None:
        """The cassette for ``key`` if there is one (one stat; records the use)."""
        # the key becomes a path: nothing but 64 hex digits may reach the file system
        if not _KEY_RE.fullmatch(key):
            return None
        path = f"{self._root_str}/{key[:2]}/{key}.yaml"
        if not os.path.isfile(path):
            return None
        self._note_use(key)
        return Path(path)

    def _note_use(self, key: str) -> None:
        with self._guard:
            self._pending[key] = self.clock()
            full = len(self._pending) >= self.flush_every
        if full:
            self.flush()

    def flush(self) -> None:
        """Write buffered last-use times to the index (under the index's file lock)."""
        _flush_hits(self._index, self._lock_path, self._pending, self._guard)

    # -- vcrpy ------------------------------------------------------------------------
    @contextlib.contextmanager
    def vcr_for(self, key: str, mode: str = "replay") -> Iterator[Any]:
        """vcrpy's cassette context for ``key`` (yields vcrpy's ``Cassette``).

        ``mode``: ``replay`` (vcrpy ``none``: a miss raises vcrpy's
        ``CannotOverwriteExistingCassetteException``), ``record`` (``new_episodes``:
        replay a hit, record a miss), or a vcrpy record mode (``none``, ``once``,
        ``new_episodes``, ``all``; ``all`` re-records). A failed save is raised after
        vcrpy has removed its patches.
        """
        if mode not in _MODES:
            raise CassetteError(f"unknown cassette mode {mode!r}; valid: {', '.join(_MODES)}")
        failures: list[BaseException] = []
        context = self.vcr.use_cassette(
            os.fspath(self.path_for(key)),
            record_mode=_MODES[mode],
            allow_playback_repeats=True,  # a cache answers the same question twice
            before_save_interaction=self._key_guard(key),
            persister=AtomicPersister(capture=failures),
        )
        with context as cassette:
            yield cassette
        if failures:
            raise failures[0]

    @staticmethod
    def _key_guard(key: str) -> Any:
        def guard(
            request: VcrRequest, response: dict[str, Any]
        ) -> tuple[VcrRequest, dict[str, Any]] | None:
            actual = request_key(request.method, request.uri, request.body)
            if actual != key:
                # stored under this name it could never be found again
                warnings.warn(
                    f"not recorded: {request.method} {normalise_path(request.uri)} has key {actual[:12]}…, "
                    f"but the cassette is for {key[:12]}…; compute the key from the exact request body",
                    stacklevel=2,
                )
                return None
            return request, response

        return guard

    @contextlib.contextmanager
    def use(self, key: str, record: bool = False) -> Iterator[Any]:
        """Run HTTP calls inside ``key``'s cassette: replay only, or record misses.

        A request the cassette cannot answer in replay raises :class:`CassetteMissError`
        (vcrpy's exception is its ``__cause__``).
        """
        try:
            with self.vcr_for(key, "record" if record else "replay") as cassette:
                yield cassette
        except CannotOverwriteExistingCassetteException as exc:
            raise CassetteMissError(
                f"no cassette answers this request (key {key[:12]}…) under {self.root}; "
                "record it (record mode) or let the caller fall back"
            ) from exc
        if os.path.isfile(self.path_for(key)):
            self._note_use(key)

    # -- direct access (the replay HTTP server) ----------------------------------------
    def _interactions(self, key: str) -> list[dict[str, Any]]:
        path = self.lookup(key)
        if path is None:
            raise CassetteMissError(f"no cassette for key {key[:12]}… under {self.root}")
        try:
            data = DeterministicYamlSerializer.deserialize(path.read_text(encoding="utf-8"))
            return list(data["interactions"])
        except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise CassetteError(f"cannot read cassette {path}: {exc}") from exc

    def read_response(self, key: str) -> dict[str, Any]:
        """The stored answer for ``key`` without vcrpy.

        ``{"status", "reason", "headers" (name -> str), "text", "json" (parsed body or
        None), "stream" (an SSE body)}``. Raises :class:`CassetteMissError`.
        """
        for interaction in self._interactions(key):
            request = interaction.get("request") or {}
            if (
                request_key(
                    str(request.get("method", "")), str(request.get("uri", "")), request.get("body")
                )
                != key
            ):
                continue
            response = interaction.get("response") or {}
            headers = {
                str(k).lower(): ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                for k, v in (response.get("headers") or {}).items()
            }
            text = (response.get("body") or {}).get("string") or ""
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            stream = "text/event-stream" in headers.get("content-type", "")
            parsed = None
            if not stream and "json" in headers.get("content-type", "json"):
                with contextlib.suppress(ValueError):
                    parsed = json.loads(text)
            status = response.get("status") or {}
            return {
                "status": int(status.get("code", 200)),
                "reason": str(status.get("message") or ""),
                "headers": headers,
                "text": text,
                "json": parsed,
                "stream": stream,
            }
        raise CassetteMissError(f"the cassette for key {key[:12]}… holds no matching request")

    def write_response(
        self, key: str, request: Mapping[str, Any], response: Mapping[str, Any]
    ) -> Path | None:
        """Store one interaction in vcrpy's format, through the same filters as recording.

        ``request``: ``method``, ``path`` (or ``url``), ``body`` (bytes, str or JSON
        value), optional ``headers``. ``response``: ``status``, optional ``reason``,
        ``headers`` (name -> str or list), and the body as ``text``/``body`` (str or
        bytes, compressed if ``content-encoding`` says so) or ``json``. Returns the path,
        or None when the response must not be stored (error, partial stream, binary).
        """
        method = str(request.get("method", "POST")).upper()
        url = str(request.get("url") or request.get("path") or "")
        raw_body = request.get("body")
        body = (
            raw_body
            if isinstance(raw_body, (bytes, str)) or raw_body is None
            else canonical_body(raw_body)
        )
        actual = request_key(method, url, body)
        if actual != key:
            raise CassetteError(
                f"write_response: the request's key is {actual[:12]}…, not {key[:12]}…"
            )
        if "://" not in url:
            url = _PLACEHOLDER_ORIGIN + (url if url.startswith("/") else "/" + url)
        vcr_request = _scrub_request(
            VcrRequest(method, url, body, dict(request.get("headers") or {}))
        )

        if "json" in response:
            payload: bytes = json.dumps(response["json"], indent=2, ensure_ascii=False).encode(
                "utf-8"
            )
        else:
            raw = response.get("text", response.get("body", b""))
            payload = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw or b"")
        headers = {
            str(k): (list(map(str, v)) if isinstance(v, (list, tuple)) else [str(v)])
            for k, v in (response.get("headers") or {}).items()
        }
        if "json" in response and not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = ["application/json"]
        status = int(response.get("status", 200))
        vcr_response = {
            "status": {"code": status, "message": str(response.get("reason") or "")},
            "headers": headers,
            "body": {"string": payload},
        }
        scrubbed = _scrub_response(decode_response(vcr_response))
        if scrubbed is None:
            return None
        path = self.path_for(key)
        write_atomic(
            path,
            vcr_serialize(
                {"requests": [vcr_request], "responses": [scrubbed]}, DeterministicYamlSerializer()
            ),
        )
        self._note_use(key)
        return path

    # -- housekeeping -----------------------------------------------------------------
    def _entries(self) -> list[tuple[str, Path, int, float]]:
        """(key, path, size, mtime) of every cassette."""
        out: list[tuple[str, Path, int, float]] = []
        try:
            shards = [e for e in os.scandir(self.root) if e.is_dir() and len(e.name) == 2]
        except FileNotFoundError:
            return out
        for shard in shards:
            for entry in os.scandir(shard.path):
                name = entry.name
                if name.endswith(".yaml") and len(name) == 69 and entry.is_file():
                    st = entry.stat()
                    out.append((name[:-5], Path(entry.path), st.st_size, st.st_mtime))
        return out

    def stats(self) -> dict[str, Any]:
        """``entries``, ``bytes``, ``oldest_use``/``newest_use`` (epoch seconds or None), ``root``."""
        self.flush()
        index = _read_index(self._index)
        entries = self._entries()
        uses = [index.get(key, mtime) for key, _p, _s, mtime in entries]
        return {
            "entries": len(entries),
            "bytes": sum(size for _k, _p, size, _m in entries),
            "oldest_use": min(uses) if uses else None,
            "newest_use": max(uses) if uses else None,
            "root": str(self.root),
        }

    def prune(
        self,
        max_bytes: int | None = None,
        max_age_days: float | None = None,
        now: float | None = None,
    ) -> list[Path]:
        """Evict cassettes: all unused for more than ``max_age_days``, then least recently
        used first until the rest is at most ``max_bytes``. Returns the removed paths."""
        now = self.clock() if now is None else now
        self.root.mkdir(parents=True, exist_ok=True)
        with self._guard:
            hits = dict(self._pending)
            self._pending.clear()
        removed: list[Path] = []
        with FileLock(str(self._lock_path), timeout=30):
            index = _read_index(self._index)
            for key, when in hits.items():
                index[key] = max(when, index.get(key, 0.0))
            entries = sorted(
                (
                    (index.get(key, mtime), key, path, size)
                    for key, path, size, mtime in self._entries()
                ),
                key=lambda e: (e[0], e[1]),
            )
            keep: list[tuple[float, str, Path, int]] = []
            for entry in entries:
                if max_age_days is not None and entry[0] < now - max_age_days * 86400:
                    removed.append(entry[2])
                else:
                    keep.append(entry)
            if max_bytes is not None:
                total = sum(e[3] for e in keep)
                while keep and total > max_bytes:
                    entry = keep.pop(0)
                    total -= entry[3]
                    removed.append(entry[2])
            for path in removed:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # only succeeds once the shard is empty
            live = {e[1] for e in keep}
            _write_index(self._index, {k: v for k, v in index.items() if k in live})
        return removed

    def close(self) -> None:
        """Flush buffered hits now (also happens when the store is collected or at exit)."""
        self._finalizer()

    def __enter__(self) -> CassetteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# the security check


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}")


def _mask(secret: str) -> str:
    return secret[:4] + "…" if len(secret) > 8 else "…"


def secrets_in(
    root: str | os.PathLike[str], needles: tuple[str, ...] | list[str] = ()
) -> list[str]:
    """Findings (one line each, secrets masked) in the cassettes under ``root``.

    Looks for sensitive headers (authorization, api-key, cookies, organisation, project)
    on either side of every interaction, for each string in ``needles``, and for text
    shaped like an API key or a bearer token. An unreadable cassette is a finding too.
    """
    base = Path(root)
    files = (
        [base]
        if base.is_file()
        else sorted(
            p
            for p in base.rglob("*")
            if p.suffix in (".yaml", ".yml", ".json") and p.is_file() and p.name != INDEX_NAME
        )
    )
    findings: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(f"{path}: unreadable ({exc.__class__.__name__}), cannot be checked")
            continue
        for number, needle in enumerate(needles, 1):
            if needle and needle in text:
                findings.append(f"{path}: contains secret #{number} ({_mask(needle)})")
        if _KEY_LIKE.search(text):
            findings.append(f"{path}: contains text shaped like an API key (sk-…)")
        if _BEARER.search(text):
            findings.append(f"{path}: contains a bearer token")
        try:
            data = yaml.load(text, Loader=_Loader) if path.suffix != ".json" else json.loads(text)
        except (yaml.YAMLError, ValueError) as exc:
            findings.append(
                f"{path}: not parseable ({exc.__class__.__name__}), headers cannot be checked"
            )
            continue
        interactions = data.get("interactions", []) if isinstance(data, Mapping) else []
        for number, interaction in enumerate(
            interactions if isinstance(interactions, list) else []
        ):
            for side in ("request", "response"):
                part = interaction.get(side) if isinstance(interaction, Mapping) else None
                headers = part.get("headers") if isinstance(part, Mapping) else None
                for name in headers or {}:
                    if str(name).lower() in SENSITIVE_HEADERS:
                        findings.append(
                            f"{path}: interaction {number} {side} header {str(name).lower()!r}"
                        )
    return findings
