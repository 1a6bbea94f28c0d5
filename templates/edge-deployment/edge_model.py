"""Run the exported edge model offline: ONNX with onnxruntime, TFLite with ai-edge-litert.

Copied verbatim into the generated runner package. It needs numpy plus the one runtime
of the chosen backend, imported lazily, and never TensorFlow (the LiteRT interpreter
replaces the stale tflite-runtime and the deprecated tf.lite.Interpreter).

    model = EdgeModel("model.tflite", backend="litert")
    out = model.run({"input": [[5.1, 3.5, 1.4, 0.2]]})   # {"softmax": array([[...]])}

Inputs and outputs are matched by tensor name. Every input is float32 ``[batch, width]``;
when all inputs are single examples (1-D) the batch axis is added and removed again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["BACKENDS", "EdgeModel"]

BACKENDS = ("onnxruntime", "litert")


class EdgeModel:
    """One ONNX (``backend="onnxruntime"``) or TFLite (``backend="litert"``) model."""

    def __init__(
        self, path: str | Path, backend: str = "onnxruntime", *, num_threads: int | None = None
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.path, self.backend = Path(path), backend
        if backend == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            self._session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
            self.input_names = [i.name for i in self._session.get_inputs()]
            self.output_names = [o.name for o in self._session.get_outputs()]
        else:
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            # the signature runner binds by name and resizes inputs to each call's batch
            self._runner = self._interpreter.get_signature_runner()
            signature = next(iter(self._interpreter.get_signature_list().values()))
            self.input_names = list(signature["inputs"])
            self.output_names = list(signature["outputs"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for ``feeds`` (input name -> ``[batch, width]`` or ``[width]``)."""
        missing = sorted(set(self.input_names) - set(feeds))
        unknown = sorted(set(feeds) - set(self.input_names))
        if missing or unknown:
            raise KeyError(
                f"inputs {self.input_names} expected; missing {missing}, unknown {unknown}"
            )
        arrays = {name: np.asarray(feeds[name], dtype=np.float32) for name in self.input_names}
        single = all(a.ndim == 1 for a in arrays.values())
        arrays = {
            name: np.ascontiguousarray(a[None, :] if a.ndim == 1 else a)
            for name, a in arrays.items()
        }
        if self.backend == "onnxruntime":
            values = self._session.run(self.output_names, arrays)
            result = dict(zip(self.output_names, values, strict=True))
        else:
            # copies: the interpreter reuses its buffers on the next call
            result = {name: np.array(v) for name, v in self._runner(**arrays).items()}
        return {name: (v[0] if single else v) for name, v in result.items()}

    def __repr__(self) -> str:
        return f"EdgeModel({str(self.path)!r}, backend={self.backend!r})"
