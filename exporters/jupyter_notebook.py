"""The ``jupyter-notebook`` format: a narrated notebook that runs the workflow.

The notebook explains each block (label, description, type) in Markdown cells and runs
the generated workflow library (shipped beside it in ``src/``) on the examples, plots the
outputs, times the calls and records its values in ``mulm-notebook-results.json``.
Cells are built with nbformat; workflow strings reach code cells only as JSON literals
read from a file, and Markdown cells only through the Markdown-escaping filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_mulm.blocks import NUMERIC_KINDS
from pytest_mulm.errors import MissingDependencyError
from pytest_mulm.exporter import ExportContext, Exporter
from pytest_mulm.hookspecs import hookimpl
from pytest_mulm.workflow import Workflow

from .library import library_requirements, names_for, write_library

FORMAT = "jupyter-notebook"
RESULTS = "mulm-notebook-results.json"
# what the notebook needs besides the workflow library's own requirements
NOTEBOOK_REQUIREMENTS = ("ipykernel==7.4.0", "nbclient==0.11.0", "nbconvert==7.17.2", "matplotlib==3.11.2")


class JupyterNotebookExporter(Exporter):
    name = FORMAT
    description = "Narrated Jupyter notebook running the workflow, with a plot and timings"
    supported_blocks = frozenset({"input", "output", "python", "llm", *NUMERIC_KINDS})

    def requirements(self, workflow: Workflow) -> list[str]:
        return sorted({*library_requirements(workflow), *NOTEBOOK_REQUIREMENTS}, key=str.lower)

    def export(self, ctx: ExportContext) -> None:
        try:
            import nbformat
        except ImportError:
            raise MissingDependencyError(f"{FORMAT} needs nbformat: pip install 'pytest-mulm[notebook]'") from None
        wf = ctx.workflow
        names = names_for(wf)
        common = write_library(ctx, f"src/{names['package']}", names)
        requirements = self.requirements(wf)
        ctx.write_text("requirements.txt", "".join(f"{r}\n" for r in requirements))
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        notebook.cells = [*_narrative(ctx, wf), *_code(names["package"])]
        nbformat.validate(notebook)
        ctx.write_text(f"{names['dist']}.ipynb", nbformat.writes(notebook))
        ctx.render("README.md.jinja", "README.md", notebook=f"{names['dist']}.ipynb", **{**common, "requirements": requirements})


def _markdown(ctx: ExportContext, template: str, **variables: Any):
    import nbformat

    text = ctx.env.get_template(f"{FORMAT}/{template}").render(workflow=ctx.workflow, docs=ctx.docs, **variables)
    return nbformat.v4.new_markdown_cell(text)


def _narrative(ctx: ExportContext, wf: Workflow) -> list:
    cells = [_markdown(ctx, "intro.md.jinja")]
    for nid in wf.order:
        node = wf.node(nid)
        inputs = [wf.node(e.source).label for e in wf.upstream(nid)]
        cells.append(_markdown(ctx, "block.md.jinja", node=node, inputs=inputs))
    return cells


def _code(package: str) -> list:
    import nbformat

    cell = nbformat.v4.new_code_cell
    return [
        cell("import json\n"
             "import sys\n"
             "import time\n"
             "sys.path.insert(0, 'src')  # the workflow library exported beside this notebook\n"
             f"import {package} as workflow\n"
             "examples = workflow.examples()\n"
             "print(f'{len(examples)} example(s)')"),
        cell("results = [workflow.run(example['input']) for example in examples]\n"
             "for example, result in zip(examples, results, strict=True):\n"
             "    print(json.dumps(example['input'])[:80], '->', json.dumps(result)[:120])"),
        cell("%matplotlib inline\n"
             "import matplotlib.pyplot as plt\n"
             "def numbers(value):\n"
             "    if isinstance(value, dict) and isinstance(value.get('probabilities'), dict):\n"
             "        return value['probabilities']\n"
             "    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):\n"
             "        return {str(i): v for i, v in enumerate(value)}\n"
             "    return None\n"
             "series = [numbers(r) for r in results]\n"
             "fig, ax = plt.subplots(figsize=(8, 3))\n"
             "if all(series):\n"
             "    keys = list(series[0])\n"
             "    width = 0.8 / len(series)\n"
             "    for i, s in enumerate(series):\n"
             "        ax.bar([k + i * width for k in range(len(keys))], [s[k] for k in keys], width, label=f'example {i}')\n"
             "    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys)\n"
             "    ax.set_title('outputs per example')\n"
             "    ax.legend(fontsize='small')\n"
             "else:\n"
             "    ax.bar(range(len(results)), [len(json.dumps(r)) for r in results])\n"
             "    ax.set_title('size of each output (characters)')\n"
             "plt.show()"),
        cell("timings = []\n"
             "for _ in range(20):\n"
             "    for example in examples:\n"
             "        started = time.perf_counter()\n"
             "        workflow.run(example['input'])\n"
             "        timings.append(time.perf_counter() - started)\n"
             "timings.sort()\n"
             "print(f'p50 {timings[len(timings) // 2] * 1000:.3f} ms over {len(timings)} calls')"),
        cell(f"with open({RESULTS!r}, 'w', encoding='utf-8') as fh:\n"
             "    json.dump({'inputs': [e['input'] for e in examples], 'outputs': results}, fh)\n"
             f"print('recorded', len(results), 'outputs in', {RESULTS!r})"),
    ]


@hookimpl
def register_exporters(register: Callable[[Exporter], None]) -> None:
    register(JupyterNotebookExporter())


@hookimpl
def register_suites(register: Callable[[str, str], None]) -> None:
    register(FORMAT, "pytest_mulm.suites.jupyter_notebook")


__all__ = ["JupyterNotebookExporter"]
