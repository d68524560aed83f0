"""Inference engines for an ensemble's forward pass: torch, ONNX Runtime and OpenVINO.

Every engine runs each fold model as `attention.ForwardGradCam`: one forward pass gives a slice's
logits and its signed Grad-CAM map, so `predict` (logits) and `explain`/`grade` (both) share it.
The ONNX engines run the graph `onnx_graph` exports (or the package's ONNX files), in fp32 on the
CPU with the threads torch was given (`--threads`); OpenVINO is told to keep fp32, as it would
otherwise pick bf16 on processors that have it.

Measured on 2 busy shared cores, interleaved in one run (benchmarks/README.md): ONNX Runtime was
the fastest on the quick preset's network in every run (1.7-10x torch eager, OpenVINO 0.9-8x);
on DenseNet-161 at 224 px both ran 2.4-4.2x torch, neither ahead in every run. `auto` therefore
takes ONNX Runtime on the CPU where it is installed, then OpenVINO, then torch; on a GPU torch
(the ONNX engines here run on the CPU). The fold models run as separate graphs: one graph
holding them side by side was 1.2-1.3x faster for 15 quick networks but no faster for
DenseNet-161 (0.97-1.14x), whose 15 graphs would also pass ONNX's 2 GB file limit together.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import warnings

import numpy as np
import torch
from torch import nn

from .attention import ForwardGradCam
from .errors import SarcogradeError

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
CPU_PREFERENCE = ("onnxruntime", "openvino")   # fastest first, as measured (module docstring)
OPSET = 17
INPUT, OUTPUTS = "slices", ("logits", "signed_cam")


def require(engine: str):
    """The Python package `engine` (an engine, or onnx), or a one-line error naming it."""
    try:
        return importlib.import_module(engine)
    except ImportError:
        raise SarcogradeError(f"{engine} is not installed: this needs the Python package "
                              f"{engine} (pip install {engine})") from None


def available(engine: str) -> bool:
    try:
        require(engine)
    except SarcogradeError:
        return False
    return True


def resolve_engine(name: str, device: torch.device) -> str:
    """The engine that `name` (one of ENGINES) means on `device`."""
    if name not in ENGINES:
        raise SarcogradeError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if device.type != "cpu":
        if name not in ("auto", "torch"):
            raise SarcogradeError(f"engine {name} runs on the CPU; use --device cpu or "
                                  f"--engine torch on {device.type}")
        return "torch"
    if name == "auto":
        return next((engine for engine in CPU_PREFERENCE if available(engine)), "torch")
    return name


def engine_for_precision(name: str, precision: torch.dtype | None) -> str:
    """`auto` is torch where a reduced precision (bf16, fp16) is asked for: the ONNX engines run
    fp32 (`ensemble.slice_logits` refuses one named explicitly with bf16)."""
    return "torch" if name == "auto" and precision is not None else name


def onnx_graph(net: nn.Module, size: int) -> bytes:
    """`ForwardGradCam(net)` as an ONNX graph: input `slices` (n, 3, size, size), outputs
    `logits` (n, 2) and `signed_cam` (n, h, w); any n."""
    buffer = io.BytesIO()
    example = torch.zeros(1, 3, size, size)
    # The TorchScript exporter (exact and quick for these networks) announces its deprecation
    # at every call: not the user's concern.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(ForwardGradCam(net).eval(), (example,), buffer, input_names=[INPUT],
                          output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: "n"} for name in (INPUT, *OUTPUTS)})
    return buffer.getvalue()


class TorchEngine:
    """The fold models in torch, eager, on their device."""

    name = "torch"

    def __init__(self, models: list[nn.Module]):
        self.networks = [ForwardGradCam(net) for net in models]
        self.version = torch.__version__

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            outputs = [net(x) for net in self.networks]
        return (torch.stack([logits.float() for logits, _ in outputs]),
                torch.stack([signed.float() for _, signed in outputs]))


class OnnxEngine:
    """The fold models' ONNX graphs in ONNX Runtime or OpenVINO, fp32 on the CPU."""

    def __init__(self, name: str, graphs: list[bytes], threads: int):
        package = require(name)
        self.name, self.version = name, importlib.metadata.version(name)
        if name == "onnxruntime":
            options = package.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            sessions = [package.InferenceSession(graph, options,
                                                 providers=["CPUExecutionProvider"])
                        for graph in graphs]
            self._calls = [lambda x, s=session: s.run(list(OUTPUTS), {INPUT: x})
                           for session in sessions]
        else:
            core = package.Core()
            settings = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
            compiled = [core.compile_model(core.read_model(graph), "CPU", settings)
                        for graph in graphs]
            self._calls = [lambda x, c=model: [c(x)[c.output(o)] for o in OUTPUTS]
                           for model in compiled]

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        outputs = [call(batch) for call in self._calls]
        return (torch.from_numpy(np.stack([logits for logits, _ in outputs])),
                torch.from_numpy(np.stack([signed for _, signed in outputs])))


def use_engine(ensemble, name: str, graphs: list[bytes] | None = None):
    """`ensemble` (`ensemble.Ensemble`) with the engine `name` (ENGINES) on its device: the ONNX
    engines run `graphs` (a model package's) or graphs exported from its models here."""
    name = resolve_engine(name, ensemble.device)
    if name == "torch":
        ensemble.engine = TorchEngine(ensemble.models)
        return ensemble
    require(name)   # a missing package stops before the export
    if graphs is None:
        size = int(ensemble.input_meta["size"])
        graphs = [onnx_graph(net, size) for net in ensemble.models]
    ensemble.engine = OnnxEngine(name, graphs, torch.get_num_threads())
    return ensemble


def engine_record(engine) -> dict:
    """What run.json and grade.json record of the engine."""
    return {"engine": engine.name, "engine_version": engine.version}
