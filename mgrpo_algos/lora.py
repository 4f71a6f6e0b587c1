"""LoRA per agent: one base model in memory, one peft adapter per trained model and frozen role.

With ``lora_rank > 0`` (a field of every learner's config) the learner does not give
each agent a full model. It loads one base model, adds one LoRA adapter (Hu et al.
2021, "LoRA: Low-Rank Adaptation of Large Language Models", through ``peft``) per
trained model (``Learner.groups``: a role, or ``shared``) and per frozen role (the
sub-agents under ``main-only``), and hands each role a :class:`LoRAPolicy`: a thin
`HFPolicy` view over the shared model that makes its adapter the active one around
every ``generate`` and ``logprobs`` call. Each trained model's optimiser holds its
adapter's parameters only; the base and frozen adapters never change. The KL
reference (``beta > 0``) is the initial policy, as under full fine-tuning: a frozen
copy of each trained model's adapter as the run starts (:func:`initial_reference`;
the warm start's adapter when the run starts from a LoRA warm start, else a fresh
adapter, which leaves the base's outputs unchanged), in the same model: no second
copy of the base.

Checkpoints (``ckpt-<step>/``): ``policies/<name>/`` holds one adapter in peft's
format (``adapter_config.json``, ``adapter_model.safetensors``), ``policies/roles.json``
maps roles to them, ``policies/lora.json`` marks the directory as adapters, and
``base/`` holds the base model once (a saved `HFPolicy`), so a checkpoint is
self-contained. With ``beta > 0``, ``refs/<name>/`` holds each trained model's
reference adapter in the same format, so a resumed run keeps its initial policy as
the reference. :func:`export` merges each
role's adapter into a standalone model (``mgrpo export``).

Ray (``backend="ray"``): each role actor is a process of its own, so it holds its
own copy of the base with its model's adapter alone (:func:`adapter_policy`); the
one-base saving holds within a process. The driver ships the base once (its files,
through Ray's object store) and each actor's adapter (:class:`AdapterState`);
checkpoints and ``pull_policies`` bring back the adapters alone
(:func:`load_adapter_files`), and the driver writes ``base/`` from its own copy.

Decoding: the adapters' layers are not plain ``nn.Linear``, so a view decodes with
the model's own forward (``fast_decode=False``) and keeps no prefix cache; each view
has its own `HFPolicy` cache object anyway, so keys and values computed with one
adapter are never offered to another.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mgrpo_algos.policies import HFPolicy
from mgrpo_algos.policies.base import GenerationOutput
from mgrpo_algos.policies.prefix import PrefixGroups

LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Llama-style attention and MLP projections: the default ``lora_target_modules``."""

MARKER = "lora.json"  # in a checkpoint's policies/: its directories hold adapters
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


# --------------------------------------------------------------------------- config
def check_lora_config(config: Any) -> None:
    """Checks ``lora_rank``, ``lora_alpha``, ``lora_dropout`` and ``lora_target_modules``.

    Raises:
        ValueError: Naming the field, the value given and what is allowed.
    """
    rank = config.lora_rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(
            f"lora_rank must be an int >= 0 (0: full fine-tuning, no adapters), got {rank!r}"
        )
    alpha = config.lora_alpha
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not (math.isfinite(alpha) and alpha > 0)
    ):
        raise ValueError(f"lora_alpha must be a finite number > 0, got {alpha!r}")
    drop = config.lora_dropout
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
        raise ValueError(f"lora_dropout must be a number in [0, 1), got {drop!r}")
    targets = config.lora_target_modules
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)):
        targets = None
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(
            "lora_target_modules must be a non-empty list of module names (e.g. "
            f"{list(LORA_TARGETS)}), got {config.lora_target_modules!r}"
        )
    config.lora_target_modules = tuple(targets)
    if rank == 0:
        return
    if importlib.util.find_spec("peft") is None:
        raise ValueError(
            f"lora_rank={rank} needs the peft package: pip install 'mgrpo[lora]' "
            "(or pass lora_rank=0 for full fine-tuning)"
        )


def lora_settings(config: Any) -> dict[str, Any]:
    """The adapter settings of ``config`` that a checkpoint's adapters must match."""
    return {
        "r": int(config.lora_rank),
        "lora_alpha": float(config.lora_alpha),
        "lora_dropout": float(config.lora_dropout),
        "target_modules": sorted(config.lora_target_modules),
    }


def peft_config(config: Any) -> Any:
    """The ``peft.LoraConfig`` of ``config``'s ``lora_*`` fields."""
    from peft import LoraConfig

    s = lora_settings(config)
    return LoraConfig(
        r=s["r"],
        lora_alpha=s["lora_alpha"],
        lora_dropout=s["lora_dropout"],
        target_modules=s["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
    )


# --------------------------------------------------------------------------- the shared model
class AdapterState(NamedTuple):
    """One adapter as plain data, what crosses processes (`AdapterSet.state`).

    Attributes:
        name: The adapter's name (a trained model's or a frozen role's).
        config: Its ``peft.LoraConfig``.
        weights: peft's state dict of the adapter (CPU tensors): what
            ``adapter_model.safetensors`` holds.
    """

    name: str
    config: Any
    weights: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        """Bytes of the adapter's weights."""
        return sum(t.numel() * t.element_size() for t in self.weights.values())


class AdapterSet:
    """One base model wrapped by peft, holding named LoRA adapters; one active at a time.

    Args:
        base: The base policy. LoRA layers are injected into its model in place, so
            after the first :meth:`add` its own forward runs the active adapter: use
            :meth:`reference` for the base.

    Attributes:
        peft_model: The ``peft.PeftModel`` (None until the first adapter is added).
    """

    def __init__(self, base: HFPolicy) -> None:
        self.base = base
        self.peft_model: Any = None
        self._views: dict[str | None, LoRAPolicy] = {}

    @property
    def model(self) -> Any:
        """The transformers causal LM with the LoRA layers in it (what views call)."""
        return self.base.model

    @property
    def names(self) -> list[str]:
        """The adapters' names, in the order they were added."""
        return [] if self.peft_model is None else list(self.peft_model.peft_config)

    def add(
        self,
        name: str,
        config: Any,
        *,
        seed: int = 0,
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Adds adapter ``name`` (peft ``LoraConfig`` ``config``), trainable.

        Args:
            name: The adapter's name (a trained model's or a frozen role's).
            config: Its ``peft.LoraConfig``.
            seed: Seeds the random initialisation of its A matrices (B starts at 0, so
                a fresh adapter leaves the base's outputs unchanged); the global RNG
                is not touched.
            weights: peft's state dict of the adapter (:meth:`save_adapter`'s file),
                loaded in place of the initialisation.
        """
        from peft import get_peft_model

        if name in self.names:
            raise ValueError(f"adapter {name!r} exists already; adapters: {self.names}")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft's use of deprecated names
            torch.manual_seed(seed)
            if self.peft_model is None:
                self.peft_model = get_peft_model(self.base.model, config, adapter_name=name)
            else:
                self.peft_model.add_adapter(name, config)
        if weights is not None:
            self.load_weights(name, weights)
        for p in self.parameters(name):
            p.requires_grad_(True)
        for drop in self.dropouts(name):  # new modules start in training mode; the loss alone
            drop.eval()  # turns them on (LoRAPolicy)

    def load_weights(self, name: str, weights: Mapping[str, torch.Tensor]) -> None:
        """Copies ``weights`` (peft's state dict of one adapter) into adapter ``name``.

        Raises:
            ValueError: If a parameter of the adapter is missing or a key is unknown.
        """
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.peft_model, dict(weights), adapter_name=name)
        own = {k for k, _ in self.peft_model.named_parameters() if _owner(k) == name}
        missing = sorted(own & set(getattr(result, "missing_keys", ())))
        unexpected = list(getattr(result, "unexpected_keys", ()))
        if missing or unexpected:
            raise ValueError(
                f"the weights of adapter {name!r} do not fit the model: missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}"
            )

    def state(self, name: str) -> AdapterState:
        """Adapter ``name`` as plain data: its config and a CPU copy of its weights."""
        weights = self._state_dict(name)
        tensors = {k: v.detach().cpu().clone() for k, v in weights.items()}
        config = copy.deepcopy(self.peft_model.peft_config[name])
        config.base_model_name_or_path = None  # a path of this process; the receiver sets its own
        return AdapterState(name, config, tensors)

    def _state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """peft's state dict of adapter ``name``: its LoRA weights alone.

        ``save_embedding_layers=False``: adapters never resize the vocabulary, and
        peft's check for it reads the base's directory, which a base loaded from a
        temporary copy (a Ray role actor's) no longer has.
        """
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(
            self.peft_model, adapter_name=name, save_embedding_layers=False
        )

    def parameters(self, name: str | None) -> list[torch.nn.Parameter]:
        """Adapter ``name``'s parameters (None: the base's), in a fixed order."""
        return [p for key, p in self.peft_model.named_parameters() if _owner(key) == name]

    @contextmanager
    def active(self, name: str | None) -> Iterator[None]:
        """Makes adapter ``name`` the one the model runs (None: no adapter, the base).

        peft's switch also sets ``requires_grad`` of the adapters; every flag is put
        back on exit, so a frozen adapter stays frozen.
        """
        flags = [(p, p.requires_grad) for p in self.peft_model.parameters()]
        try:
            if name is None:
                with self.peft_model.disable_adapter():
                    yield
            else:
                if self.peft_model.active_adapter != name:
                    self.peft_model.set_adapter(name)
                yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    def dropouts(self, name: str) -> list[torch.nn.Module]:
        """The dropout modules of adapter ``name`` (empty when ``lora_dropout`` is 0)."""
        out = []
        for module in self.model.modules():
            drop = getattr(module, "lora_dropout", None)
            if isinstance(drop, torch.nn.ModuleDict) and name in drop:
                if isinstance(drop[name], torch.nn.Dropout):
                    out.append(drop[name])
        return out

    def view(self, name: str) -> LoRAPolicy:
        """The policy that runs adapter ``name`` (one object per adapter)."""
        if name not in self.names:
            raise ValueError(f"no adapter {name!r}; adapters: {self.names}")
        if name not in self._views:
            self._views[name] = LoRAPolicy(self, name)
        return self._views[name]

    def reference(self) -> LoRAPolicy:
        """The base model as a policy: every adapter disabled (the KL reference)."""
        if None not in self._views:
            self._views[None] = LoRAPolicy(self, None)
        return self._views[None]

    # ---------------------------------------------------------------- files
    def save_adapter(self, name: str, path: str | Path) -> None:
        """Writes adapter ``name`` in peft's format: ``adapter_config.json`` and its weights."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.peft_model.peft_config[name].save_pretrained(str(path))
        state = self._state_dict(name)
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})

    def save_base(self, path: str | Path) -> None:
        """Writes the base model (no LoRA layers) where `HFPolicy.load` reads it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {}
        for key, value in self.model.state_dict().items():
            if "lora_" in key:
                continue
            state[key.replace(".base_layer.", ".")] = value
        model = self.model
        model.generation_config.eos_token_id = list(self.base.stop_ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.save_pretrained(path, state_dict=state)
        self.base.tokenizer.save_pretrained(path)


def _owner(key: str) -> str | None:
    """The adapter a peft parameter name belongs to (``...lora_A.<name>.weight``), else None."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("lora_"):
            return parts[i + 1]
    return None


# --------------------------------------------------------------------------- the per-role view
class LoRAPolicy(HFPolicy):
    """One adapter of an :class:`AdapterSet` as an `HFPolicy` (a role's policy).

    It shares the set's model and tokenizer; ``generate``, ``logprobs`` and
    ``logprobs_shared_prefix`` run with its adapter active (``name=None``: with every
    adapter disabled, the base). `parameters` are the adapter's alone, which is what
    the learner's optimiser takes. ``lora_dropout`` applies in the differentiable
    log-probs only (the loss), never in sampling or under ``torch.no_grad``.

    Args:
        adapters: The shared model.
        name: The adapter, or None for the base.
    """

    def __init__(self, adapters: AdapterSet, name: str | None) -> None:
        base = adapters.base
        super().__init__(base.model, base.tokenizer, stop_ids=base.stop_ids, fast_decode=False)
        self.adapters = adapters
        self.name = name

    def __repr__(self) -> str:
        return f"LoRAPolicy(adapter={self.name!r}, adapters={self.adapters.names})"

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The adapter's parameters (none for the base view)."""
        return iter(self.adapters.parameters(self.name) if self.name is not None else [])

    @contextmanager
    def _running(self) -> Iterator[None]:
        drops = []
        if self.name is not None and torch.is_grad_enabled():
            drops = self.adapters.dropouts(self.name)
        with self.adapters.active(self.name):
            for d in drops:
                d.train(True)
            try:
                yield
            finally:
                for d in drops:
                    d.train(False)

    def logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        temperature: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        with self._running():
            return super().logprobs(input_ids, attention_mask, temperature)

    def logprobs_shared_prefix(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: PrefixGroups,
        temperature: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        with self._running():
            return super().logprobs_shared_prefix(input_ids, attention_mask, groups, temperature)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        sessions: Sequence[Hashable | None] | None = None,
        **kwargs: Any,
    ) -> GenerationOutput:
        with self.adapters.active(self.name):
            return super().generate(prompts, sessions=sessions, **kwargs)

    def save(self, path: str | Path) -> None:
        """Writes the adapter alone (peft's format); the base is saved by `save_base`."""
        if self.name is None:
            raise ValueError("the base view has no adapter to save; use AdapterSet.save_base")
        self.adapters.save_adapter(self.name, path)


# --------------------------------------------------------------------------- building the policies
def adapter_set_of(policies: Mapping[str, HFPolicy]) -> AdapterSet:
    """The one :class:`AdapterSet` every policy of ``policies`` is a view of.

    Raises:
        ValueError: If a policy is no `LoRAPolicy`, or they view different models.
    """
    sets = {id(p.adapters): p.adapters for p in policies.values() if isinstance(p, LoRAPolicy)}
    if len(sets) != 1 or not all(isinstance(p, LoRAPolicy) for p in policies.values()):
        raise ValueError(
            "expected every role's policy to be a LoRAPolicy of one AdapterSet (one base "
            f"model), got {sorted(type(p).__name__ for p in policies.values())} over "
            f"{len(sets)} base model(s)"
        )
    return next(iter(sets.values()))


# --------------------------------------------------------------------------- per process (Ray)
def adapter_policy(base: HFPolicy, state: AdapterState, *, trained: bool) -> LoRAPolicy:
    """``state``'s adapter on ``base``, as the one view of a new :class:`AdapterSet`.

    What a Ray role actor holds with ``lora_rank > 0``: its own base (an actor is a
    process of its own) with its model's adapter alone; its reference
    (:func:`initial_reference`) is a frozen copy of the adapter it starts with.

    Args:
        base: A plain policy of the base model (LoRA layers are injected into it).
        state: The adapter (`AdapterSet.state`).
        trained: False: a frozen role's adapter, whose parameters need no gradient.
    """
    adapters = AdapterSet(base)
    adapters.add(state.name, state.config, weights=state.weights)
    view = adapters.view(state.name)
    for p in view.parameters():
        p.requires_grad_(trained)
    return view


def load_adapter_files(policy: LoRAPolicy, files: Mapping[str, bytes]) -> None:
    """Copies the adapter that `LoRAPolicy.save` wrote (as path -> bytes) into ``policy``'s.

    The adapter's settings must be the ones ``policy`` has: only the weights move.
    """
    from safetensors.torch import load

    if policy.name is None:
        raise ValueError("the base view has no adapter to load weights into")
    if ADAPTER_WEIGHTS not in files:
        raise ValueError(f"no {ADAPTER_WEIGHTS} among the files given: {sorted(files)}")
    policy.adapters.load_weights(policy.name, load(files[ADAPTER_WEIGHTS]))


# --------------------------------------------------------------------------- checkpoints
REFERENCE_PREFIX = "reference-"
"""Names the frozen copy of a trained adapter that serves as its KL reference."""


def initial_reference(policy: HFPolicy, state: AdapterState | None = None) -> LoRAPolicy:
    """The KL reference of an adapter view: a frozen copy of its adapter as it is now.

    Called as a run starts, this is the initial policy (the warm start's adapter, or
    a fresh one, equal to the base), the reference ``beta`` is documented against;
    it lives in the same model as an adapter of its own that no optimiser holds.

    Args:
        policy: A trained model's adapter view.
        state: The reference's weights when they are not the view's own (a Ray role
            actor resumed from a checkpoint gets the run's initial adapter this way).
    """
    if not isinstance(policy, LoRAPolicy) or policy.name is None:
        raise ValueError(f"expected a LoRAPolicy with an adapter (lora_rank > 0), got {policy!r}")
    adapters = policy.adapters
    name = REFERENCE_PREFIX + policy.name
    state = adapters.state(policy.name) if state is None else state
    adapters.add(name, state.config, weights=state.weights)
    view = adapters.view(name)
    for p in view.parameters():
        p.requires_grad_(False)
    return view


def load_reference(ref: LoRAPolicy, folder: Path) -> None:
    """Copies the reference adapter a checkpoint saved in ``folder`` into ``ref``'s."""
    from safetensors.torch import load_file

    ref.adapters.load_weights(ref.name, load_file(str(folder / ADAPTER_WEIGHTS)))


# --------------------------------------------------------------------------- export
