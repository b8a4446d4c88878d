"""The MLP actor's numbers in a form the C++ policy library reads without libtorch (docs/DESIGN.md §5.1).

A pt2 (AOTInductor) package is a compiled shared library: its weights cannot be read back as layers.
So that ``gail_robot::Policy`` can run a pt2 package on its allocation-free native kernels, as it runs
TorchScript files, :func:`save_pt2` adds two records to the package:

``extra/native_mlp.json``
    ``{"format": "gail_robot.native_mlp", "version": 1, "obs_dim", "act_dim", "obs_clip", "tanh_head",
    "layers": [{"n_in", "n_out"}, ...], "activations": ["tanh" | "relu" | "elu" | "silu", ...],
    "blob_bytes", "blob_fnv1a64"}``, or ``{"format", "version", "why_not": "..."}`` when the actor is not
    an MLP the kernels support (the library then runs the package through libtorch's AOTI runner).
``gail_robot/native_mlp.bin``
    (not under ``extra/``: torch's Python pt2 loader decodes every ``extra/`` record as UTF-8 text)
    little-endian, in this order: ``obs_mean`` float64 (obs_dim), ``obs_std`` float64 (obs_dim),
    ``action_low``, ``action_high``, ``action_range`` float32 (act_dim each), then per layer its weight
    transposed to ``(n_in, n_out)`` row-major and its bias ``(n_out,)``, float32. These are exactly the
    buffers and parameters of :class:`ExportedPolicy` that csrc/policy/src/torchscript.cpp reads from a
    TorchScript module; ``blob_fnv1a64`` (FNV-1a, 64 bit, hex) lets the library refuse a corrupt blob.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from gail_robot.export.module import ExportedPolicy

NATIVE_FORMAT = "gail_robot.native_mlp"
NATIVE_VERSION = 1
JSON_RECORD = "extra/native_mlp.json"
BLOB_RECORD = "gail_robot/native_mlp.bin"
_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.ELU: "elu", nn.SiLU: "silu"}


def fnv1a64(data: bytes) -> str:
    """FNV-1a 64-bit hash of ``data`` as 16 hex digits (the check csrc/policy/src/pt2.cpp repeats)."""
    h = 0xCBF29CE484222325
    # Vectorised over bytes would need a loop anyway (each step depends on the last); blobs are < 1 MB.
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _network(module: ExportedPolicy) -> tuple[nn.Sequential, bool] | str:
    """The actor's Linear/activation stack and whether a tanh head follows, else why not."""
    actor = module.actor
    kind = type(actor).__name__
    if kind == "GaussianActor":
        net, tanh_head = getattr(actor, "mean_net", None), False
    elif kind == "TanhGaussianActor":
        net, tanh_head = getattr(actor, "net", None), True
    else:
        return f"actor {kind} is not an MLP actor the native kernels know"
    if not isinstance(net, nn.Sequential):
        return f"the {kind}'s network is not an nn.Sequential"
    return net, tanh_head


def native_records(module: nn.Module) -> tuple[dict[str, Any], bytes]:
    """The ``native_mlp.json`` description and ``native_mlp.bin`` blob of ``module`` (see module doc).

    An unsupported actor gives ``({"format", "version", "why_not"}, b"")``.
    """
    head: dict[str, Any] = {"format": NATIVE_FORMAT, "version": NATIVE_VERSION}
    if not isinstance(module, ExportedPolicy):
        return {**head, "why_not": f"{type(module).__name__} is not a continuous-action ExportedPolicy"}, b""
    found = _network(module)
    if isinstance(found, str):
        return {**head, "why_not": found}, b""
    net, tanh_head = found
    layers: list[dict[str, int]] = []
    activations: list[str] = []
    chunks: list[bytes] = [
        module.obs_mean.detach().double().numpy().astype("<f8").tobytes(),
        module.obs_std.detach().double().numpy().astype("<f8").tobytes(),
        *(
            getattr(module, name).detach().float().numpy().astype("<f4").tobytes()
            for name in ("action_low", "action_high", "action_range")
        ),
    ]
    for index, layer in enumerate(net):
        expect_linear = len(layers) == len(activations)
        if expect_linear and isinstance(layer, nn.Linear):
            weight = layer.weight.detach().float().numpy()  # (out, in)
            bias = (
                layer.bias.detach().float().numpy()
                if layer.bias is not None
                else np.zeros(weight.shape[0], dtype=np.float32)
            )
            layers.append({"n_in": int(weight.shape[1]), "n_out": int(weight.shape[0])})
            chunks.append(np.ascontiguousarray(weight.T).astype("<f4").tobytes())
            chunks.append(bias.astype("<f4").tobytes())
        elif (
            not expect_linear
            and type(layer) in _ACTIVATIONS
            and (not isinstance(layer, nn.ELU) or float(layer.alpha) == 1.0)
        ):
            activations.append(_ACTIVATIONS[type(layer)])
        else:
            why = (
                f"layer {index} ({type(layer).__name__}) of the actor is not supported by the native kernels"
            )
            return {**head, "why_not": why}, b""
    blob = b"".join(chunks)
    description = {
        **head,
        "obs_dim": int(module.obs_dim),
        "act_dim": int(module.act_dim),
        "obs_clip": float(module.obs_clip),
        "tanh_head": tanh_head,
        "layers": layers,
        "activations": activations,
        "blob_bytes": len(blob),
        "blob_fnv1a64": fnv1a64(blob),
    }
    return description, blob
