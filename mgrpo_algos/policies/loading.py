"""Loading a causal LM and its tokenizer: a directory, a hub id or a GGUF file, weights aligned.

`load_pretrained` is what `HFPolicy.from_pretrained` (and so `HFPolicy.load` and
`HFPolicy.smollm2`) runs; `aligned_weights` also serves the Ray roles, whose
policies arrive by pickle.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers import AutoModelForCausalLM, AutoTokenizer

_NEW_DTYPE_KWARG = Version(transformers.__version__) >= Version("4.56")


def load_pretrained(
    name_or_path: str | Path,
    *,
    gguf_file: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[Any, Any]:
    """Load a model and its tokenizer; the arguments are those of `HFPolicy.from_pretrained`.

    Returns:
        ``(model, tokenizer)``: the model on ``device`` in eval mode, its CPU
        weights aligned (`aligned_weights`).
    """
    name_or_path = str(name_or_path)
    if gguf_file is None and name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        name_or_path, gguf_file = str(path.parent), path.name
    if gguf_file is not None:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, gguf_file=str(gguf_file))
        model = _load_gguf_model(Path(name_or_path) / gguf_file, dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        dtype_kwarg = "dtype" if _NEW_DTYPE_KWARG else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **{dtype_kwarg: dtype})
    return aligned_weights(model.to(device)).eval(), tokenizer


WEIGHT_ALIGNMENT = 64
"""Bytes to which every CPU weight of a loaded model is aligned (`aligned_weights`)."""


def aligned_weights(model: Any) -> Any:
    """``model`` with every CPU tensor at a `WEIGHT_ALIGNMENT`-byte boundary.

    transformers leaves loaded weights in the memory-mapped safetensors file, each at
    its offset past the file's header (8 bytes past a 64-byte boundary for the models
    this library saves), and a single-row matrix product on CPU (a decode step with
    one sequence left in its batch) rounds differently there than at an aligned
    address: measured with torch 2.13's MKL, sampling log-probs then differ in the
    last bits from those of the same weights built or copied in memory. Moving them
    to fresh memory makes a model's numbers independent of how its weights arrived
    (a file, a pickle, a build), which the bit-for-bit checks of resumed and Ray runs
    rely on. Tensors already aligned are left in place.
    """
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.device.type == "cpu" and t.data_ptr() % WEIGHT_ALIGNMENT:
                t.data = t.data.clone()  # the CPU allocator's memory is 64-byte aligned
    return model


def _load_gguf_model(path: Path, dtype: torch.dtype) -> Any:
    """Build the model a GGUF file describes and fill it with its dequantised weights.

    ``AutoModelForCausalLM.from_pretrained(gguf_file=...)`` needs ``accelerate``;
    this does the same with transformers' GGUF reader and a plain state dict.
    """
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: expected a file at {path}")
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep the global RNG
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    extra = {}
    if "torch_dtype" in inspect.signature(load_gguf_checkpoint).parameters:
        extra["torch_dtype"] = dtype
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model, **extra)
    state = {name: tensor.to(dtype) for name, tensor in tensors["tensors"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"GGUF file {path} does not match its config: expected every parameter, got "
            f"missing {sorted(set(missing) - tied)} and unexpected {sorted(unexpected)}"
        )
    model.tie_weights()
    return model
