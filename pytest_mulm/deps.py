"""Which distributions an export needs: an AST scan of block imports plus declared pins.

Decision (design.md §4 is silent on versions): a scanned import is pinned with ``==`` to
the version installed where the export runs, when it is installed there, so the artifact
reproduces what was verified; a declared requirement always wins over a scanned one.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import WorkflowError
from .workflow import Workflow

__all__ = ["check_requirement", "imports_of", "requirements_for"]

# import name -> distribution name, where they differ
IMPORT_TO_DIST = {
    "sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow", "cv2": "opencv-python-headless",
    "yaml": "PyYAML", "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "dotenv": "python-dotenv",
    "google.protobuf": "protobuf", "jwt": "PyJWT", "OpenSSL": "pyOpenSSL", "Crypto": "pycryptodome",
    "magic": "python-magic", "docx": "python-docx", "pptx": "python-pptx", "serial": "pyserial",
    "sentence_transformers": "sentence-transformers", "attr": "attrs", "tflite_runtime": "tflite-runtime",
    "langchain_community": "langchain-community", "huggingface_hub": "huggingface-hub",
    "onnxruntime": "onnxruntime", "faiss": "faiss-cpu", "fitz": "PyMuPDF", "Levenshtein": "python-Levenshtein",
}


def check_requirement(text: str, *, where: str, field: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise WorkflowError(f"{text!r} is not a valid requirement ({reason}); write e.g. \"jinja2==3.1.6\"", where=where, field=field) from None


def imports_of(source: str) -> list[str]:
    """Top-level module names a block imports (absolute imports only), in order."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return list(dict.fromkeys(names))


def distribution_for(module: str) -> str | None:
    """The distribution that provides ``module``, or None for the standard library."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return None
    for key in (module, ".".join(module.split(".")[:2]), top):
        if key in IMPORT_TO_DIST:
            return IMPORT_TO_DIST[key]
    return top.replace("_", "-")


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _declared(workflow: Workflow) -> Iterable[tuple[str, str]]:
    for req in workflow.dependencies:
        yield req, "workflow dependencies"
    for node in workflow.nodes:
        data = node.config
        for key in ("dependencies",):
            for req in data.get(key) or []:
                yield req, f"node '{node.id}' config.dependencies"
        raw = next((n for n in workflow.raw.get("nodes", []) if isinstance(n, dict) and str(n.get("id")) == node.id), {})
        meta = (raw.get("data") or {}).get("metadata") if isinstance(raw.get("data"), dict) else None
        if isinstance(meta, dict):
            for req in meta.get("dependencies") or []:
                yield req, f"node '{node.id}' metadata.dependencies"


def requirements_for(workflow: Workflow, *, extra: Iterable[str] = ()) -> list[str]:
    """Sorted requirement strings for the artifact's runtime (scanned, pinned, declared)."""
    wanted: dict[str, str] = {}
    scanned: list[str] = list(extra)
    if workflow.has_numeric or any(n.kind == "output" and n.config.get("labels") for n in workflow.nodes):
        scanned.append("numpy")
    for node in workflow.nodes:
        if node.source:
            for module in imports_of(node.source):
                dist = distribution_for(module)
                if dist:
                    scanned.append(dist)
            for _, module in node.implicit_imports:
                dist = distribution_for(module)
                if dist:
                    scanned.append(dist)
    for dist in scanned:
        version = _installed_version(dist)
        wanted[canonicalize_name(dist)] = f"{dist}=={version}" if version else dist
    for text, where in _declared(workflow):
        if not isinstance(text, str):
            raise WorkflowError(f"{text!r} is not a requirement string", where=where)
        req = check_requirement(text, where=where, field="dependencies")
        wanted[canonicalize_name(req.name)] = str(req)
    return sorted(wanted.values(), key=str.lower)
