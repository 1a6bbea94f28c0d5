"""Numeric block primitives in float32 numpy (design.md §4 table).

This file is self-contained on purpose: the python-package exporter ships a verbatim
copy of it inside every generated package, so it may import nothing but numpy and math.
A single example is a vector, a batch is a matrix: every op works on the last axis.
"""

from __future__ import annotations

import math

try:
    import numpy as np
except ImportError:  # packages of pure-Python workflows do not depend on numpy
    np = None

F32 = np.float32 if np is not None else float


def as_tensor(value):
    return np.asarray(value, dtype=F32)


def gelu(x):
    # the exact form, x * 0.5 * (1 + erf(x / sqrt(2))), in every runtime (design.md §4)
    x64 = np.asarray(x, dtype=np.float64)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (x64 * 0.5 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(F32)


def activate(x, name="linear"):
    x = as_tensor(x)
    if name in (None, "", "linear", "identity"):
        return x
    if name == "relu":
        return np.maximum(x, F32(0))
    if name == "gelu":
        return gelu(x)
    if name == "tanh":
        return np.tanh(x).astype(F32)
    if name == "sigmoid":
        return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)
    if name == "softmax":
        return softmax(x)
    raise ValueError(f"unknown activation {name!r}")


def softmax(x, axis=-1):
    x = as_tensor(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(F32)


def normalize(x, mean, std):
    return ((as_tensor(x) - as_tensor(mean)) / as_tensor(std)).astype(F32)


def dense(x, kernel, bias, activation="linear"):
    y = as_tensor(x) @ as_tensor(kernel) + as_tensor(bias)
    return activate(y.astype(F32), activation)


def concat(xs, axis=-1):
    return np.concatenate([as_tensor(x) for x in xs], axis=axis).astype(F32)


def router(x, kernel, bias, top_k=None):
    gate = softmax(as_tensor(x) @ as_tensor(kernel) + as_tensor(bias))
    if top_k is None or top_k >= gate.shape[-1]:
        return gate
    # keep the k largest gates (ties broken towards the lower expert index), renormalise
    order = np.argsort(-gate, axis=-1, kind="stable")
    keep = np.zeros_like(gate, dtype=bool)
    np.put_along_axis(keep, order[..., :top_k], True, axis=-1)
    kept = np.where(keep, gate, F32(0))
    return (kept / np.sum(kept, axis=-1, keepdims=True)).astype(F32)


def mixture(gate, experts):
    gate = as_tensor(gate)
    stacked = np.stack([as_tensor(e) for e in experts], axis=-2)  # [..., n_experts, units]
    return np.sum(gate[..., :, None] * stacked, axis=-2).astype(F32)


def label_output(probabilities, labels):
    p = as_tensor(probabilities)
    if p.ndim == 1:
        return {
            "label": str(labels[int(np.argmax(p))]),
            "probabilities": {str(lab): float(v) for lab, v in zip(labels, p, strict=True)},
        }
    return [label_output(row, labels) for row in p]


def llm_request(prompt, system="", model="", temperature=None, max_tokens=None):
    """The chat-completion body of an llm block: built the same way by the reference
    runtime and by every artifact, so both find the same cassette."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    body = {"model": model, "messages": messages}
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def to_jsonable(value):
    """Plain JSON types for any runtime value (arrays become lists of Python floats)."""
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def differences(actual, expected, rtol=1e-5, atol=1e-8, path="$"):
    """Where two JSON-like values differ: exact for text, integers and booleans, relative
    tolerance for floats. Returns a list of "path: detail" strings (empty when equal)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return [] if actual is expected else [f"{path}: {actual!r} != {expected!r}"]
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
            if math.isnan(expected) and math.isnan(actual):
                return []
            if abs(actual - expected) <= atol + rtol * abs(expected):
                return []
        return [f"{path}: {actual!r} != {expected!r} (rtol {rtol})"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            return [f"{path}: keys {sorted(actual) if isinstance(actual, dict) else type(actual).__name__} != {sorted(expected)}"]
        out = []
        for k in expected:
            out.extend(differences(actual[k], expected[k], rtol, atol, f"{path}.{k}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {type(actual).__name__} of length {len(actual) if isinstance(actual, list) else '-'} != list of length {len(expected)}"]
        out = []
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            out.extend(differences(a, e, rtol, atol, f"{path}[{i}]"))
        return out
    return [] if actual == expected and type(actual) is type(expected) else [f"{path}: {actual!r} != {expected!r}"]
