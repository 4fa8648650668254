"""The files of a mini-omni checkpoint directory, their sources, and loading them with clear errors."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import torch
from snac import SNAC
from tokenizers import Tokenizer

from .model import MiniOmniConfig, MiniOmniGPT, released_state_dict_shapes
from .snac_stream import SNAC_VQ_STRIDES
from .whisper import WhisperEncoder

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT_DIR = REPO_ROOT / "checkpoints" / "mini-omni"
SNAC_SAMPLE_RATE = 24_000

WHISPER_SMALL_URL = (
    "https://openaipublic.azureedge.net/main/whisper/models/"
    "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794/small.pt"
)
# Each needed file (relative to the checkpoint directory) and where it comes from: the model repository, the
# SNAC codec the original loads with SNAC.from_pretrained, and the Whisper weights whisper.load_model("small") fetches.
FILE_SOURCES = {
    "lit_model.pth": "mini-omni",
    "model_config.yaml": "mini-omni",
    "tokenizer.json": "mini-omni",
    "small.pt": "whisper",
    "snac/config.json": "snac",
    "snac/pytorch_model.bin": "snac",
}


def download_commands(checkpoint_dir: Path, sources: set[str]) -> list[str]:
    d = str(checkpoint_dir)
    commands = {
        "mini-omni": f"huggingface-cli download gpt-omni/mini-omni --local-dir {shlex.quote(d)}",
        "snac": "huggingface-cli download hubertsiuzdak/snac_24khz config.json pytorch_model.bin"
        f" --local-dir {shlex.quote(d + '/snac')}",
        "whisper": f"curl -L --create-dirs -o {shlex.quote(d + '/small.pt')} {WHISPER_SMALL_URL}",
    }
    return [command for source, command in commands.items() if source in sources]


class MissingCheckpointError(FileNotFoundError):
    """Checkpoint files are absent; the message lists them and the commands that fetch them."""

    def __init__(self, checkpoint_dir: Path, missing: list[str]) -> None:
        commands = download_commands(checkpoint_dir, {FILE_SOURCES[name] for name in missing})
        super().__init__(
            f"mini-omni checkpoint incomplete in {checkpoint_dir}: missing {', '.join(missing)}.\n"
            "With internet access, get it with:\n" + "\n".join(f"  {command}" for command in commands)
        )
        self.checkpoint_dir = checkpoint_dir
        self.missing = missing


class CheckpointMismatchError(ValueError):
    """A checkpoint file exists but does not hold what the model needs (a missing or mis-shaped tensor, ...)."""


def resolve_checkpoint_dir(checkpoint_dir: Path | str | None) -> Path:
    if checkpoint_dir is None:
        checkpoint_dir = os.environ.get("MINI_OMNI_CHECKPOINT") or DEFAULT_CHECKPOINT_DIR
    return Path(checkpoint_dir)


def check_files(checkpoint_dir: Path) -> None:
    missing = [name for name in FILE_SOURCES if not (checkpoint_dir / name).is_file()]
    if missing:
        raise MissingCheckpointError(checkpoint_dir, missing)


def check_shapes(state_dict: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: Path) -> None:
    """Raises CheckpointMismatchError naming every missing, mis-shaped or unknown tensor."""
    problems = [f"missing key {key!r} (expected shape {shape})" for key, shape in expected.items() if key not in state_dict]
    problems += [
        f"key {key!r} has shape {tuple(state_dict[key].shape)}, expected {shape}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    problems += [f"unexpected key {key!r}" for key in state_dict if key not in expected]
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CheckpointMismatchError(f"{source} does not match the mini-omni model:\n  {shown}")


def load_tensors(path: Path, mmap: bool = False) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - a truncated download, an HTML error page saved as .pth, ...
        raise CheckpointMismatchError(f"{path} is not a readable torch checkpoint: {e}") from None


def load_gpt(checkpoint_dir: Path, device: torch.device) -> MiniOmniGPT:
    config_path = checkpoint_dir / "model_config.yaml"
    try:
        config = MiniOmniConfig.from_yaml(config_path)
    except (ValueError, TypeError) as e:
        raise CheckpointMismatchError(f"{config_path}: {e}") from None
    path = checkpoint_dir / "lit_model.pth"
    state_dict = load_tensors(path, mmap=True)  # read lazily from disk instead of a second copy in memory
    check_shapes(state_dict, released_state_dict_shapes(config), path)
    with torch.device("meta"):  # no random init of 0.5B parameters that are overwritten at once
        gpt = MiniOmniGPT(config)
    gpt.load_state_dict(state_dict, assign=True)
    gpt.tie_weights()  # assign=True replaced the shared parameter by two loaded ones; the embedding wins
    return gpt.to(device=device, dtype=torch.float32).eval()


def load_whisper(checkpoint_dir: Path, config: MiniOmniConfig, device: torch.device) -> WhisperEncoder:
    path = checkpoint_dir / "small.pt"
    checkpoint = load_tensors(path)
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise CheckpointMismatchError(f"{path} is not an OpenAI Whisper checkpoint (no 'dims'/'model_state_dict')")
    dims = checkpoint["dims"]
    if dims["n_audio_state"] != config.whisper_adapter_dim:
        raise CheckpointMismatchError(
            f"{path} encodes {dims['n_audio_state']}-wide features; the model's whisper_adapter takes"
            f" {config.whisper_adapter_dim} (mini-omni listens through Whisper small)"
        )
    encoder = WhisperEncoder(dims)
    prefix = "encoder."
    state_dict = {k[len(prefix) :]: v for k, v in checkpoint["model_state_dict"].items() if k.startswith(prefix)}
    check_shapes(state_dict, {k: tuple(v.shape) for k, v in encoder.state_dict().items()}, path)
    encoder.load_state_dict(state_dict)
    return encoder.to(device).eval()  # float32: small.pt stores float16


def load_snac(checkpoint_dir: Path, config: MiniOmniConfig, device: torch.device) -> SNAC:
    config_path = checkpoint_dir / "snac" / "config.json"
    try:
        snac = SNAC(**json.loads(config_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        raise CheckpointMismatchError(f"{config_path} is not a SNAC config: {e}") from None
    if (snac.sampling_rate, snac.vq_strides, snac.codebook_size) != (SNAC_SAMPLE_RATE, SNAC_VQ_STRIDES, config.eoa):
        raise CheckpointMismatchError(
            f"{config_path} describes a {snac.sampling_rate} Hz codec with vq_strides {snac.vq_strides} and"
            f" {snac.codebook_size} codes; mini-omni speaks through snac_24khz"
            f" ({SNAC_SAMPLE_RATE} Hz, {SNAC_VQ_STRIDES}, {config.eoa} codes)"
        )
    path = checkpoint_dir / "snac" / "pytorch_model.bin"
    try:  # SNAC's own loader: it converts older weight-norm key names, so no key list is checked here
        snac.load_state_dict(load_tensors(path))
    except RuntimeError as e:
        raise CheckpointMismatchError(f"{path} does not fit {config_path}: {e}") from None
    return snac.to(device).eval()


def load_tokenizer(checkpoint_dir: Path) -> Tokenizer:
    path = checkpoint_dir / "tokenizer.json"
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type for unreadable files
        raise CheckpointMismatchError(f"{path} is not a tokenizers file: {e}") from None
