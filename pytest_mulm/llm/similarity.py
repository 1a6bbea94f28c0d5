"""Similarity tier of the LLM cache (design.md §7, pitfalls.md).

A cached answer may be reused for a request that is not byte-identical to the cached one,
but only when a wrong reuse is very unlikely: a false hit is a wrong answer in someone's
deployment, a false miss only costs one API call. Hence two layers:

1. **Structured fields match exactly.** :func:`structured_key` hashes the whole request
   body (model, temperature, seed, response_format, tools, ..., the number of messages
   and their roles and names) with only the free text of message contents replaced by a
   placeholder. Two requests are compared at all only when their keys are equal.

2. **Free text may be near, with guards.** :func:`similarity` is *not* a cosine of
   embeddings (pitfalls.md: plain cosine gives 0.93-0.97 to templated prompts that differ
   only in format, framework, shape or runtime). It is a lexical score over normalised
   content words (case, spelling variants, light stemming, a small synonym table, politeness
   and function words removed) that charges a *substituted* content word (one word only in
   ``a`` and another only in ``b``) far more than an added or dropped one, because a swap of
   one word ("mean" -> "median", "deployment" -> "evaluation") is how near-misses differ.
   :func:`guards` then lists hard objections (numbers, negations, formats, frameworks,
   runtimes, languages, identifiers, entities, antonyms, swapped arguments, direction);
   any objection vetoes the match whatever the score.

The vocabularies below are plain data, lowercased, matched on word boundaries of the
lowercased text with ``-``/``_`` treated as spaces. Extending them only makes the cache
more conservative, except for :data:`SYNONYMS` and :data:`PHRASES`, which make two
different wordings equal and must therefore hold only true equivalences.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------
# Documented vocabularies
# --------------------------------------------------------------------------------------

#: Words whose presence in one text but not the other changes the request's meaning.
#: ``n't`` is expanded to ``not`` before matching. Compared as (cue, next content word)
#: pairs, so "do not include X, include Y" differs from "include X, do not include Y".
NEGATIONS: frozenset[str] = frozenset(
    {
        "not", "no", "never", "without", "except", "excluding", "exclude", "avoid",
        "unless", "nor", "neither", "none", "nothing", "nobody", "cannot", "omit", "skip",
    }
)

#: Data and file formats (multi-word entries allowed). Aliases map to one canonical name.
FORMATS: dict[str, str] = {
    "json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "yaml": "yaml", "yml": "yaml",
    "csv": "csv", "tsv": "tsv", "xml": "xml", "markdown": "markdown", "md": "markdown",
    "html": "html", "toml": "toml", "ini": "ini", "onnx": "onnx", "tflite": "tflite",
    "parquet": "parquet", "pdf": "pdf", "restructuredtext": "rst", "rst": "rst",
    "plain text": "text", "txt": "text", "npy": "npy", "npz": "npz", "png": "png",
    "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "svg": "svg", "webp": "webp",
    "safetensors": "safetensors", "pickle": "pickle", "pkl": "pickle", "ipynb": "notebook",
    "notebook": "notebook", "latex": "latex", "excel": "excel", "xlsx": "excel",
    "docx": "docx", "protobuf": "protobuf", "avro": "avro", "arrow": "arrow",
    "feather": "feather", "hdf5": "hdf5", "h5": "hdf5", "zip": "zip", "tar": "tar",
    "gzip": "gzip", "savedmodel": "savedmodel", "torchscript": "torchscript",
    "gguf": "gguf", "int8": "int8", "float16": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32",
    "mermaid": "mermaid", "graphviz": "graphviz", "openapi": "openapi", "swagger": "openapi",
}

#: Frameworks and libraries. "requests" is left out on purpose: it is also a plain noun.
FRAMEWORKS: dict[str, str] = {
    "pytorch": "pytorch", "torch": "pytorch", "tensorflow": "tensorflow", "tf": "tensorflow",
    "keras": "keras", "jax": "jax", "flax": "flax", "sklearn": "sklearn",
    "scikit learn": "sklearn", "scikit": "sklearn", "xgboost": "xgboost",
    "lightgbm": "lightgbm", "catboost": "catboost", "statsmodels": "statsmodels",
    "scipy": "scipy", "numpy": "numpy", "pandas": "pandas", "polars": "polars",
    "dask": "dask", "spark": "spark", "pyspark": "spark", "fastapi": "fastapi",
    "flask": "flask", "django": "django", "starlette": "starlette", "gradio": "gradio",
    "streamlit": "streamlit", "pydantic": "pydantic", "dataclasses": "dataclasses",
    "attrs": "attrs", "matplotlib": "matplotlib", "seaborn": "seaborn", "plotly": "plotly",
    "bokeh": "bokeh", "spacy": "spacy", "nltk": "nltk", "gensim": "gensim",
    "opencv": "opencv", "cv2": "opencv", "pillow": "pillow", "pil": "pillow",
    "transformers": "transformers", "hugging face": "huggingface",
    "huggingface": "huggingface", "langchain": "langchain", "llamaindex": "llamaindex",
    "httpx": "httpx", "aiohttp": "aiohttp", "urllib": "urllib", "click": "click",
    "argparse": "argparse", "typer": "typer", "pytest": "pytest", "unittest": "unittest",
    "hypothesis": "hypothesis", "jinja": "jinja", "jinja2": "jinja", "sqlalchemy": "sqlalchemy",
    "celery": "celery", "react": "react", "vue": "vue", "angular": "angular",
    "express": "express", "rails": "rails", "spring": "spring", "mlflow": "mlflow",
    "wandb": "wandb", "optuna": "optuna", "ray": "ray", "onnxscript": "onnxscript",
}

#: Runtimes, accelerators, operating systems, platforms and deployment targets.
RUNTIMES: dict[str, str] = {
    "onnxruntime": "onnxruntime", "onnx runtime": "onnxruntime", "ort": "onnxruntime",
    "litert": "litert", "tflite runtime": "tflite-runtime", "coreml": "coreml",
    "core ml": "coreml", "cuda": "cuda", "rocm": "rocm", "mps": "mps", "metal": "metal",
    "cpu": "cpu", "gpu": "gpu", "tpu": "tpu", "edge tpu": "edgetpu", "npu": "npu",
    "android": "android", "ios": "ios", "raspberry pi": "raspberrypi", "docker": "docker",
    "kubernetes": "kubernetes", "k8s": "kubernetes", "helm": "helm", "aws": "aws",
    "lambda": "lambda", "ec2": "ec2", "sagemaker": "sagemaker", "azure": "azure",
    "gcp": "gcp", "google cloud": "gcp", "cloud run": "cloudrun", "heroku": "heroku",
    "vercel": "vercel", "windows": "windows", "macos": "macos", "mac": "macos",
    "linux": "linux", "ubuntu": "ubuntu", "debian": "debian", "alpine": "alpine",
    "x86": "x86", "x86 64": "x86", "amd64": "x86", "arm": "arm", "arm64": "arm",
    "aarch64": "arm", "browser": "browser", "webassembly": "wasm", "wasm": "wasm",
    "esp32": "esp32", "microcontroller": "microcontroller", "arduino": "arduino",
    "tensorrt": "tensorrt", "openvino": "openvino", "jetson": "jetson", "coral": "coral",
    "colab": "colab", "jupyterlab": "jupyterlab", "jupyter": "jupyter", "kaggle": "kaggle",
    "serverless": "serverless", "iphone": "ios", "ipad": "ios", "edge": "edge",
}

#: Natural and programming languages. Entries in :data:`CASED_LANGUAGES` are also
#: ordinary English words and count only when written capitalised mid-sentence.
LANGUAGES: dict[str, str] = {
    "english": "english", "french": "french", "german": "german", "spanish": "spanish",
    "portuguese": "portuguese", "italian": "italian", "dutch": "dutch",
    "japanese": "japanese", "chinese": "chinese", "korean": "korean", "russian": "russian",
    "arabic": "arabic", "hindi": "hindi", "polish": "polish", "turkish": "turkish",
    "swedish": "swedish", "python": "python", "javascript": "javascript", "js": "javascript",
    "typescript": "typescript", "ts": "typescript", "rust": "rust", "java": "java",
    "kotlin": "kotlin", "scala": "scala", "c++": "cpp", "cpp": "cpp", "c#": "csharp",
    "csharp": "csharp", "golang": "go", "ruby": "ruby", "php": "php", "perl": "perl",
    "sql": "sql", "bash": "bash", "shell": "shell", "powershell": "powershell",
    "zsh": "zsh", "lua": "lua", "haskell": "haskell", "matlab": "matlab", "julia": "julia",
    "elixir": "elixir", "dart": "dart", "objective c": "objc", "cuda c": "cudac",
}
CASED_LANGUAGES: dict[str, str] = {"Go": "go", "R": "r", "C": "c", "Swift": "swift"}

#: Pairs of opposite words (compared after stemming). A pair objects when the two texts
#: use the pair differently, e.g. one says "ascending" and the other "descending".
ANTONYMS: tuple[tuple[str, str], ...] = (
    ("increase", "decrease"), ("min", "max"), ("minimum", "maximum"),
    ("minimize", "maximize"), ("first", "last"), ("before", "after"),
    ("ascending", "descending"), ("enable", "disable"), ("include", "exclude"),
    ("including", "excluding"), ("short", "long"), ("shorter", "longer"),
    ("shortest", "longest"), ("add", "remove"), ("positive", "negative"),
    ("above", "below"), ("over", "under"), ("upper", "lower"), ("uppercase", "lowercase"),
    ("encode", "decode"), ("encrypt", "decrypt"), ("compress", "decompress"),
    ("serialize", "deserialize"), ("read", "write"), ("request", "response"),
    ("left", "right"), ("more", "less"), ("most", "least"), ("more", "fewer"),
    ("small", "large"), ("smaller", "larger"), ("smallest", "largest"),
    ("fast", "slow"), ("faster", "slower"), ("fastest", "slowest"), ("old", "new"),
    ("older", "newer"), ("oldest", "newest"), ("high", "low"), ("higher", "lower"),
    ("highest", "lowest"), ("open", "close"), ("start", "stop"), ("start", "end"),
    ("begin", "end"), ("true", "false"), ("accept", "reject"), ("import", "export"),
    ("input", "output"), ("upload", "download"), ("push", "pull"), ("show", "hide"),
    ("lock", "unlock"), ("allow", "deny"), ("on", "off"), ("success", "failure"),
    ("pass", "fail"), ("win", "lose"), ("buy", "sell"), ("early", "late"),
    ("horizontal", "vertical"), ("sync", "async"), ("public", "private"),
    ("internal", "external"), ("inner", "outer"), ("forward", "backward"),
    ("greater", "less"), ("formal", "informal"), ("simple", "complex"),
    ("easy", "hard"), ("valid", "invalid"), ("row", "column"), ("train", "test"),
    ("mean", "median"), ("precision", "recall"), ("encode", "decode"), ("zip", "unzip"),
    ("wrap", "unwrap"), ("pack", "unpack"), ("attach", "detach"), ("mount", "unmount"),
    ("install", "uninstall"), ("connect", "disconnect"), ("load", "unload"),
    ("sort", "shuffle"), ("sparse", "dense"), ("strict", "lenient"),
)

#: Written numbers, compared as digits by the number guard ("three" == "3").
WRITTEN_NUMBERS: dict[str, str] = {
    "zero": "0", "one": "1", "single": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
    "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100",
    "thousand": "1000", "million": "1000000", "dozen": "12", "half": "0.5",
    "zeros": "0", "twice": "2x", "once": "1x",
}
#: "one" after these words is a pronoun ("each one", "the second one"), not a number.
_ONE_PRONOUN_AFTER = frozenset(
    {"each", "every", "any", "which", "this", "that", "the", "second", "first", "last",
     "other", "another", "no", "new", "old", "right", "wrong", "same"}
)

#: Phrase rewrites applied to the lowercased text before tokenising (regex -> text).
#: Each must be a true equivalence (they make different wordings equal).
PHRASES: tuple[tuple[str, str], ...] = (
    (r"\bno more than\b", "at most"), (r"\bnot more than\b", "at most"),
    (r"\bup to\b", "at most"), (r"\b(\w+) or fewer\b", r"at most \1"),
    (r"\b(\w+) or less\b", r"at most \1"), (r"\bhighest first\b", "in descending order"),
    (r"\blowest first\b", "in ascending order"), (r"\bhow many\b", "number of"),
    (r"\bstandard deviation\b", "std"), (r"\bin alphabetical order\b", "sorted alphabetically"),
    (r"\bchange log\b", "changelog"), (r"\bstop words\b", "stopwords"),
    (r"\be-mail\b", "email"), (r"\bset up\b", "setup"), (r"\bas well as\b", "and"),
    (r"\bin order to\b", "to"), (r"\bis able to\b", "can"), (r"\bmake sure\b", "ensure"),
    (r"\bfor example\b", "eg"), (r"\be\.g\.", "eg"), (r"\bi\.e\.", "ie"),
    (r"\bbased on\b", "from"), (r"\bgiven\b", "from"), (r"\bout of\b", "from"),
    (r"\bnumber of times\b", "count"), (r"\bpoint out\b", "highlight"),
)

#: Contractions expanded before anything else, so "don't" and "do not" are one thing.
CONTRACTIONS: tuple[tuple[str, str], ...] = (
    (r"\bcan't\b", "can not"), (r"\bwon't\b", "will not"), (r"\bcannot\b", "can not"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'ve\b", " have"), (r"'ll\b", " will"),
    (r"'d\b", " would"), (r"\bi'm\b", "i am"), (r"\b(what|that|it|there|here|who|how)'s\b", r"\1 is"),
    (r"\blet's\b", "let us"),
)

#: Groups of interchangeable words; every word maps to the first of its group. Only true
#: equivalences in an instruction to a model belong here.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("write", "create", "generate", "produce", "implement", "draft", "compose"),
    ("short", "brief", "briefly"),
    ("compute", "calculate"),
    ("check", "verify", "determine"),
    ("choose", "decide", "pick"),
    ("each", "every", "all"),
    ("dict", "dictionary", "dicts", "dictionaries"),
    ("doc", "docs", "documentation", "document"),
    ("intro", "introduction"),
    ("remove", "strip", "delete"),
    ("convert", "turn", "transform"),
    ("example", "sample"),
    ("large", "big"), ("largest", "biggest"), ("larger", "bigger"),
    ("respond", "reply", "response"),
    ("fix", "correct", "repair"),
    ("summarize", "summary", "summarization"),
    ("describe", "description"),
    ("explain", "explanation"),
    ("install", "installation"),
    ("configure", "configuration", "config"),
    ("bullet", "bulleted"),
    ("one", "single"),
    ("only", "just", "solely"),
    ("below", "under", "beneath"),
    ("above", "over"),
    ("text", "texts"),
    ("stopwords", "stopword"),
    ("argument", "arg", "args", "arguments", "parameter", "param", "params"),
    ("repo", "repository"),
    ("info", "information"),
    ("app", "application"),
    ("func", "function"),
    ("readme",),
)

#: Function words, politeness and filler removed before comparing content. Negations,
#: comparatives, quantifiers and directional words are NOT here: they carry meaning.
STOPWORDS: frozenset[str] = frozenset(
    """a an the this that these those it its it's they them their there here his her
    i me my we us our you your yours he she is are was were be been being am do does did
    doing have has had having will would shall should can could may might must
    of to into in on at by for from with using use via as about per onto within through
    and or but also so then than too very really quite just please kindly thanks thank
    hi hello hey could would like want need help me let lets i'd okay ok well
    which what who whom whose when where why how whether if
    following below-mentioned given some any such same own
    step steps way below above""".split()
)
# "below"/"above" mostly mean "the following"/"the previous" ("the text below"); where they
# are a comparison ("above the threshold") the antonym guard, which looks at every word,
# still tells "above" from "below".

# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------

_PLACEHOLDER = "<free-text>"


def _strip_content(content: Any) -> Any:
    """Return ``content`` with its free text replaced by a placeholder.

    A string becomes the placeholder; in a list of content parts (multimodal messages)
    only ``text`` parts lose their text, so image URLs, audio and part order stay exact.
    """
    if isinstance(content, str):
        return _PLACEHOLDER
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and "text" in part:
                part = {**part, "text": _PLACEHOLDER}
            out.append(part)
        return out
    return content


def structured_key(body: dict[str, Any]) -> str:
    """Hash every field of a chat-completion body except the free text of messages.

    Model, sampling parameters, seed, response_format, tools, the number of messages, their
    roles and names all take part, so two bodies with different keys are never compared.
    """
    stripped = copy.deepcopy(body)
    messages = stripped.get("messages")
    if isinstance(messages, list):
        stripped["messages"] = [
            {**m, "content": _strip_content(m.get("content"))} if isinstance(m, dict) else m
            for m in messages
        ]
    canonical = json.dumps(stripped, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def free_text(body: dict[str, Any]) -> list[str]:
    """The free-text pieces of a body's messages, in order (one per text content)."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
    return texts


# --------------------------------------------------------------------------------------
# Text normalisation
# --------------------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                         "\u2013": "-", "\u2014": "-", "\u00a0": " "})
_WORD = re.compile(r"[a-z0-9]+(?:\+\+|#)?")
_CLAUSE_BREAK = re.compile(r"[.!?;:,()\[\]\n]")


def _clean(text: str) -> str:
    """Unicode-normalise, straighten quotes and dashes."""
    return unicodedata.normalize("NFKC", text).translate(_QUOTES)


def _stem(word: str) -> str:
    """A deliberately small suffix stripper (plural, -ing, -ed, -ly, British -ise).

    It only has to map forms of one word to one string; conflating two different words is
    the failure that matters, so the rules are few and leave short words alone.
    """
    w = word
    if len(w) <= 3 or not w.isalpha():
        return w
    # British spellings: summarise/summarising/normalisation -> -ize forms
    w = re.sub(r"is(e|es|ed|ing|ation|ations)$", r"iz\1", w)
    w = re.sub(r"(colo|behavio|favo|hono|labo|flavo)ur", r"\1r", w)
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith(("ches", "shes", "xes", "zes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ing") and len(w) >= 6:
        w = w[:-3]
    elif w.endswith("ied") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("ed") and len(w) >= 5:
        w = w[:-2]
    elif w.endswith("ly") and len(w) >= 6:
        w = w[:-2]
    if w.endswith("ness") and len(w) >= 8:
        w = w[:-4]
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]
    return w


def _build_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for group in SYNONYMS:
        canonical = _stem(group[0])
        for word in group:
            table[_stem(word)] = canonical
    return table


_SYN = _build_synonyms()
_STOP = frozenset(_stem(w) for w in STOPWORDS) | STOPWORDS


def _prepare(text: str) -> str:
    """Lowercase, expand contractions, apply phrase rewrites, possessives to "of"."""
    t = _clean(text)
    # "the review's sentiment" -> "the sentiment of review": word order then matches the
    # "of" paraphrase, which matters for the swapped-arguments guard.
    t = re.sub(r"\b(\w+)'s\s+(\w+)", r"\2 of \1", t)
    t = re.sub(r"\b(\w+s)'\s+(\w+)", r"\2 of \1", t)
    t = re.sub(r"(?<=\w)'s\b", "", t)  # a possessive left before a quote: "README's 'X'"
    t = t.lower()
    for pattern, repl in CONTRACTIONS:
        t = re.sub(pattern, repl, t)
    for pattern, repl in PHRASES:
        t = re.sub(pattern, repl, t)
    return t


def _canon(word: str) -> str:
    if word in WRITTEN_NUMBERS:
        # "three" and "3" are one token, so a written-out number is not a substitution
        return WRITTEN_NUMBERS[word]
    stem = _stem(word)
    return _SYN.get(stem, stem)


def _clauses(text: str) -> list[list[str]]:
    """Canonical content tokens, grouped by clause (split at punctuation).

    Words coordinated by "and"/"or"/"," ("request and response", "short, friendly") are
    put in sorted order, because their order does not change an instruction.
    """
    prepared = _prepare(text).replace("-", " ").replace("_", " ").replace("'", " ")
    # sort simple coordinations "x and y" / "x, y" / "x or y" of single words
    def _sort_pair(m: re.Match[str]) -> str:
        x, sep, y = m.group(1), m.group(2), m.group(3)
        if x in STOPWORDS or y in STOPWORDS or x in NEGATIONS or y in NEGATIONS:
            return m.group(0)
        lo, hi = sorted((x, y))
        return f"{lo}{sep}{hi}"

    prepared = re.sub(r"\b([a-z]+)(\s*,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+)([a-z]+)\b",
                      _sort_pair, prepared)
    clauses: list[list[str]] = []
    for chunk in _CLAUSE_BREAK.split(prepared):
        tokens = [_canon(w) for w in _WORD.findall(chunk) if w not in STOPWORDS]
        tokens = [t for t in tokens if t not in _STOP]
        if tokens:
            clauses.append(tokens)
    return clauses


def _tokens(text: str) -> list[str]:
    return [t for clause in _clauses(text) for t in clause]


def _merge_compounds(only_a: Counter[str], only_b: Counter[str],
                     seq_a: list[str], seq_b: list[str]) -> None:
    """Treat "changelog" and "change log" (or "stopwords"/"stop words") as equal."""
    for one, other_seq, other in ((only_a, seq_b, only_b), (only_b, seq_a, only_a)):
        for word in list(one):
            for x, y in zip(other_seq, other_seq[1:], strict=False):
                if x + y == word and other[x] > 0 and other[y] > 0:
                    one[word] -= 1
                    other[x] -= 1
                    other[y] -= 1
                    break
    for c in (only_a, only_b):
        for k in [k for k, v in c.items() if v <= 0]:
            del c[k]


#: Weight of a content word present in one text only in the coverage ratio
#: ``common / (common + ADD_COST * added)``: an added word matters more in a short prompt.
ADD_COST = 0.35
#: Factor applied per added word whatever the prompt's length: an added word can be an
#: added constraint ("... and mention the license"), which a long shared template must not
#: dilute. With DEFAULT_THRESHOLD, two added words never pass.
ADD_FACTOR = 0.9
#: Factor applied per substitution (a content word only in ``a`` paired with another only
#: in ``b``). Near-misses differ exactly like this ("mean"/"median"), so one substitution
#: must sink the score below any sensible threshold however long the prompt is; a cost
#: added to the denominator instead would be diluted by a long shared template.
SUB_FACTOR = 0.5


def similarity(a: str, b: str) -> float:
    """Lexical similarity in [0, 1] of two free texts, after normalisation.

    ``common / (common + ADD_COST * added) * ADD_FACTOR ** added * SUB_FACTOR ** substituted``
    over multisets of
    canonical content words, where *substituted* pairs a word only in one text with a word
    only in the other and *added* counts the remaining unpaired words. Texts equal after
    normalisation score 1.0.
    """
    if a == b:
        return 1.0
    ta, tb = _tokens(a), _tokens(b)
    if not ta and not tb:
        na = re.sub(r"\W+", "", _clean(a).lower())
        nb = re.sub(r"\W+", "", _clean(b).lower())
        return 1.0 if na == nb else 0.0
    ca, cb = Counter(ta), Counter(tb)
    common = sum((ca & cb).values())
    only_a, only_b = ca - cb, cb - ca
    _merge_compounds(only_a, only_b, ta, tb)
    na, nb = sum(only_a.values()), sum(only_b.values())
    common += (len(ta) - common - na + len(tb) - common - nb) // 2  # merged compounds
    if common <= 0:
        return 0.0
    subs = min(na, nb)
    adds = max(na, nb) - subs
    return common / (common + ADD_COST * adds) * ADD_FACTOR**adds * SUB_FACTOR**subs


# --------------------------------------------------------------------------------------
# Guards
# --------------------------------------------------------------------------------------

_NUM = re.compile(r"\d+(?:[.,]\d+)*")


def _numbers(text: str) -> list[str]:
    """Numbers in order of appearance: digits (also inside words such as "int8" or "v2"),
    decimals and versions as one unit ("3.11"), "1,000" as "1000", written numbers."""
    t = _clean(text).lower()
    out: list[str] = []
    for m in re.finditer(r"\d+(?:[.,]\d+)*|[a-z]+", t):
        tok = m.group(0)
        if tok[0].isdigit():
            if re.fullmatch(r"\d{1,3}(?:,\d{3})+", tok):
                tok = tok.replace(",", "")
            elif "," in tok:  # "1,2" in a list: two numbers
                out.extend(tok.split(","))
                continue
            out.append(tok.rstrip("."))
        elif tok in WRITTEN_NUMBERS:
            if tok == "one":
                before = t[: m.start()].split()
                if before and before[-1].strip(".,;:") in _ONE_PRONOUN_AFTER:
                    continue
            if tok == "single":
                out.append("1")
                continue
            out.append(WRITTEN_NUMBERS[tok])
    return out


def _vocab_hits(text: str, vocab: dict[str, str]) -> set[str]:
    """Canonical names of ``vocab`` entries present in ``text`` (word boundaries)."""
    t = " " + re.sub(r"[\s\-_/]+", " ", _clean(text).lower()) + " "
    hits: set[str] = set()
    for term, canonical in vocab.items():
        if re.search(r"(?<![\w+#])" + re.escape(term) + r"(?![\w+#])", t):
            hits.add(canonical)
    return hits


def _languages(text: str) -> set[str]:
    hits = _vocab_hits(text, LANGUAGES)
    clean = _clean(text)
    for word, canonical in CASED_LANGUAGES.items():
        # cased, and not the first word of a sentence ("Go to the page")
        if re.search(r"(?<![.!?:\n]\s)(?<!^)(?<=\s)" + re.escape(word) + r"\b(?![+#])", clean):
            hits.add(canonical)
    return hits


_IDENT_PATTERNS = (
    re.compile(r"`([^`]+)`"),                                   # inline code
    re.compile(r'"([^"\n]+)"'),                                 # double-quoted strings
    re.compile(r"(?<![\w'])'([^'\n]+?)'(?![\w'])"),             # single-quoted strings
    re.compile(r"https?://[^\s\"'<>)]+[^\s\"'<>).,;:!?]"),      # URLs
    re.compile(r"\b[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*(?:\([^()]*\))?)+(?:\([^()]*\))?"),  # a.b(), file.txt
    re.compile(r"\b[A-Za-z_]\w*\([^()]*\)"),                    # calls: predict(batch)
    re.compile(r"(?<![\w/])/[A-Za-z_{][\w\-/.{}]*"),            # paths and endpoints
    re.compile(r"\b[A-Za-z][a-z0-9]*_[A-Za-z0-9_]+\b"),         # snake_case
    re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b"),               # CONSTANT_CASE
    re.compile(r"\b[a-z]+[A-Z][A-Za-z0-9]*\b"),                 # camelCase
    re.compile(r"\.[a-z][a-z0-9]{1,5}\b"),                      # bare extensions: .npz
)
_OPERATOR = re.compile(r"(?<=[\w\s)\]])(\*\*|//|==|!=|<=|>=|->|[*+/%<>=^&|])(?=[\s\w(\[])")


def _identifiers(text: str) -> set[str]:
    """Quoted strings, code spans, URLs, file names, calls, endpoints and identifiers.

    Compared case-insensitively with whitespace collapsed: a lowercased copy of a prompt
    is still the same prompt, while a different name is a different request.
    """
    t = _clean(text)
    found: set[str] = set()
    for pattern in _IDENT_PATTERNS:
        for m in pattern.finditer(t):
            value = m.group(1) if pattern.groups else m.group(0)
            value = re.sub(r"\s+", " ", value.strip()).lower()
            if value and not re.fullmatch(r"[\d.]+", value):
                found.add(value)
    for m in _OPERATOR.finditer(t):
        found.add("op:" + m.group(1))
    return found


def _sentence_initial(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'([*-")
    return not before or before[-1] in ".!?:;\n"


def _entities(text: str) -> set[str]:
    """Capitalised words not at the start of a sentence (lowercased), minus stopwords."""
    t = _clean(text)
    out: set[str] = set()
    for m in re.finditer(r"\b[A-Z][A-Za-z0-9]*\b", t):
        word = m.group(0)
        if word.lower() in STOPWORDS or _sentence_initial(t, m.start()):
            continue
        out.add(word.lower())
    return out


def _negation_scopes(text: str) -> Counter[str]:
    """Each negation cue with the next two content words: "not:include license".

    Two words, because "do not include the license, include the citation" and "include
    the license, do not include the citation" share the cue and the verb.
    """
    words = _WORD.findall(_prepare(text).replace("-", " "))
    scopes: Counter[str] = Counter()
    for i, word in enumerate(words):
        if word in NEGATIONS:
            scope = [_canon(w) for w in words[i + 1:] if w not in STOPWORDS
                     and w not in NEGATIONS][:2]
            cue = "not" if word in {"not", "cannot", "never", "no", "none"} else word
            scopes[f"{cue}:{' '.join(scope)}"] += 1
    return scopes


_ANTONYM_STEMS = tuple((_stem(x), _stem(y), x, y) for x, y in ANTONYMS)


def _word_forms(text: str) -> Counter[str]:
    """Counts of every word under its raw, stemmed and canonical (synonym) form."""
    forms: Counter[str] = Counter()
    for w in _WORD.findall(_prepare(text).replace("-", " ")):
        forms.update({w, _stem(w), _canon(w)})
    return forms


def _antonym_objections(a: str, b: str) -> list[str]:
    """A pair objects when one text has more of one side and the other more of the other
    side ("reads ... CSV" / "writes ... CSV"); both texts using both words the same number
    of times is fine ("write a function that reads" / "create a function that reads")."""
    fa, fb = _word_forms(a), _word_forms(b)
    out = []
    for sx, sy, x, y in _ANTONYM_STEMS:
        dx = max(fa[x], fa[sx]) - max(fb[x], fb[sx])
        dy = max(fa[y], fa[sy]) - max(fb[y], fb[sy])
        if dx * dy < 0:
            out.append(f"antonyms: {x}/{y}")
    return out


def _bigrams(text: str) -> set[tuple[str, str]]:
    return {(c[i], c[i + 1]) for c in _clauses(text) for i in range(len(c) - 1)}


def _swapped_arguments(a: str, b: str) -> list[str]:
    """Same words, exchanged roles: "Ana fixes the export; Ben reviews the docs" against
    "Ana fixes the docs; Ben reviews the export" (bag of words identical)."""
    ba, bb = _bigrams(a), _bigrams(b)
    only_a, only_b = ba - bb, bb - ba
    for p, x in only_a:
        for q, y in only_a:
            if p != q and x != y and (p, y) in only_b and (q, x) in only_b:
                return [f"swapped arguments: {p} {x} / {q} {y}"]
    return []


_DIRECTION = re.compile(r"\bfrom\s+(?:the\s+|a\s+|an\s+)?([\w.+-]+)(?:\s+[\w.]+)?\s+(?:to|into)\s+"
                        r"(?:the\s+|a\s+|an\s+)?([\w.+-]+)")


def _direction(text: str) -> set[tuple[str, str]]:
    t = _clean(text).lower()
    return {(m.group(1), m.group(2)) for m in _DIRECTION.finditer(t)}


def guards(a: str, b: str) -> list[str]:
    """Reasons why ``a`` and ``b`` must not share a cached answer (empty: no objection)."""
    if a == b:
        return []
    reasons: list[str] = []
    na, nb = _numbers(a), _numbers(b)
    if Counter(na) != Counter(nb):
        reasons.append(f"numbers differ: {sorted(set(na) ^ set(nb)) or (na, nb)}")
    elif na != nb:
        reasons.append(f"numbers in a different order: {na} / {nb}")
    ga, gb = _negation_scopes(a), _negation_scopes(b)
    if ga != gb:
        reasons.append(f"negation differs: {sorted((ga - gb) + (gb - ga))}")
    for label, vocab in (("format", FORMATS), ("framework", FRAMEWORKS),
                         ("runtime", RUNTIMES)):
        ha, hb = _vocab_hits(a, vocab), _vocab_hits(b, vocab)
        if ha != hb:
            reasons.append(f"{label} differs: {sorted(ha ^ hb)}")
    la, lb = _languages(a), _languages(b)
    if la != lb:
        reasons.append(f"language differs: {sorted(la ^ lb)}")
    ia, ib = _identifiers(a), _identifiers(b)
    if ia != ib:
        reasons.append(f"identifiers differ: {sorted(ia ^ ib)}")
    ea, eb = _entities(a), _entities(b)
    words_a = {w.lower() for w in re.findall(r"\w+", _clean(a))}
    words_b = {w.lower() for w in re.findall(r"\w+", _clean(b))}
    missing = sorted((ea - words_b) | (eb - words_a))
    if missing:
        reasons.append(f"named entities differ: {missing}")
    reasons.extend(_antonym_objections(a, b))
    reasons.extend(_swapped_arguments(a, b))
    da, db = _direction(a), _direction(b)
    if any((y, x) in db for x, y in da if x != y):
        reasons.append("direction reversed (from X to Y)")
    return reasons


# --------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------

#: Chosen on tests/data/similarity_pairs.jsonl (385 pairs: 180 paraphrases, 205 near-misses)
#: with ``python benchmarks/bench_similarity.py``. Served = score >= threshold and no guard:
#:   threshold 0.60-0.70: precision 100.0 % (172/172), recall 95.6 %
#:   threshold 0.75-0.80: precision 100.0 % (171/171), recall 95.0 %
#:   threshold 0.85:      precision 100.0 % (169/169), recall 93.9 %
#:   threshold 0.90:      precision 100.0 % (155/155), recall 86.1 %
#: The highest unguarded near-miss scores 0.50 (one substituted word), paraphrases that add
#: one word score 0.84-0.98 and the next-lowest paraphrase 0.71 (two added words), so the
#: set is separated anywhere in 0.60-0.85 and precision cannot choose. 0.85 is the most conservative value that keeps recall above
#: 90 %: it serves one added word only when the texts share >= 6 content words and never
#: two added words. The risk the set does not measure is an added qualifier in a short
#: prompt ("sorts a list" / "sorts a list of strings" scores 0.83, "uses the GPU" / "uses
#: the GPU if available" 0.81): both pass at 0.80 and are refused at 0.85.
#: Caveat: the vocabularies were written while looking at this set, so these figures are
#: optimistic for unseen prompts.
DEFAULT_THRESHOLD = 0.85


@dataclass(frozen=True)
class Match:
    """A cached entry judged equivalent to a request: its key and similarity score."""

    key: str
    score: float


class SimilarityIndex:
    """Cached request bodies grouped by :func:`structured_key`.

    ``find`` compares a request only with entries whose structured fields are identical;
    each message text is compared with the entry's text at the same position, the score is
    the lowest of the per-message scores, and any guard objection rules the entry out.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._groups: dict[str, list[tuple[str, list[str]]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._groups.values())

    def add(self, key: str, body: dict[str, Any]) -> None:
        """Remember ``body`` under the cache ``key``."""
        self._groups.setdefault(structured_key(body), []).append((key, free_text(body)))

    def find(self, body: dict[str, Any], threshold: float | None = None) -> Match | None:
        """The best entry with score >= threshold and no guard objection, else None."""
        limit = self.threshold if threshold is None else threshold
        texts = free_text(body)
        best: Match | None = None
        for key, cached in self._groups.get(structured_key(body), []):
            if len(cached) != len(texts):  # cannot happen with equal keys; be safe
                continue
            score = 1.0
            for x, y in zip(texts, cached, strict=True):
                if x == y:
                    continue
                if guards(x, y):
                    score = -1.0
                    break
                score = min(score, similarity(x, y))
            if score >= limit and (best is None or score > best.score):
                best = Match(key, score)
        return best
