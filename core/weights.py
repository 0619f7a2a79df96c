"""Safe weight files: safetensors only, each beside a JSON model card that pins its SHA-256.

Pickle-based checkpoints can run code when loaded, so they are refused before a byte is parsed;
a file whose hash differs from its card is refused too (tampered, truncated or swapped).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import PurifyLabError
from core.paths import WEIGHTS_DIR, write_files
from core.results import software_provenance

if TYPE_CHECKING:  # torch and safetensors load only with weights: reading a card (the app's home page) needs neither
    import torch

PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2+ opcode PROTO


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def card_text(card: dict) -> str:
    """A card as it is written to disk, by save_weights and by ship alike."""
    return json.dumps(card, indent=2, sort_keys=True) + "\n"


def ship(weights_path: Path, stem: str) -> str:
    """--ship: a finished run's weights file and its card, copied into weights/ as `stem`, the name its
    loader reads: whatever --weights called the run's file, it can replace that model only. Both are
    staged and renamed together (write_files): an interrupt leaves the old pair or the new one, never
    new weights beside the old card. The run folder keeps its copy, so shipping stays the user's choice.
    Returns the line the CLI prints: a shipped model replaced without a word went unnoticed."""
    target = WEIGHTS_DIR / f"{stem}.safetensors"
    card = read_card(weights_path) | {"file": target.name}  # the card names the file it sits beside
    replaced = ", replacing the model shipped there before" if target.exists() else ""
    write_files({target: Path(weights_path).read_bytes(), card_path(target): card_text(card)})
    return f"shipped {weights_path} as {target}{replaced}"


def save_weights(module: torch.nn.Module, path: str | Path, card: dict[str, Any], fp16: bool = True) -> dict:
    """Write `module`'s state dict as safetensors (fp16 floats by default) and its card beside it; the
    card names the class whose state dict it holds (`model_class`, unless given), so loading refuses
    the file of another network (a purifier's under a classifier's name) in one line. Both are staged,
    synced and renamed together (write_files), as `ship` does: a reader never meets a half-written file."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise PurifyLabError(f"weights must be saved as .safetensors, not '{path.suffix}'")
    state = {}
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if fp16 and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor
    data = save(state)
    full_card = dict(card)
    full_card.setdefault("model_class", type(module).__name__)
    full_card["software"] = software_provenance()  # the code that wrote this file, as every CLI output records
    full_card.update(
        file=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        file_size_bytes=len(data),
        parameter_count=sum(p.numel() for p in module.parameters()),
        storage_dtype="float16" if fp16 else "float32",
    )
    write_files({path: data, card_path(path): card_text(full_card)})
    return full_card


def read_card(weights_path: str | Path) -> dict:
    path = card_path(Path(weights_path))
    if not path.is_file():
        raise PurifyLabError(f"no model card {path.name} beside {Path(weights_path).name}")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PurifyLabError(f"model card {path} is not readable JSON ({error})") from None
    if not isinstance(card, dict):
        raise PurifyLabError(f"model card {path} is not a JSON object")
    return card


def _refuse_non_safetensors(path: Path) -> None:
    """safetensors = 8-byte little-endian header length, then a JSON header opening with '{'."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise PurifyLabError(f"refusing {path.name}: pickle-based weights can run code; use .safetensors")
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        if path.suffix != ".safetensors":
            raise PurifyLabError(f"weights must be a .safetensors file, got '{path.name}'")
        return
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        raise PurifyLabError(f"refusing {path.name}: it is a pickle/torch archive, not safetensors")
    raise PurifyLabError(f"{path.name} is not a valid safetensors file")


def load_state(path: str | Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict as float32, after checking its hash against its card."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise PurifyLabError(f"weights file not found: {path}")
    _refuse_non_safetensors(path)
    if verify:
        expected = read_card(path).get("sha256")
        actual = sha256_of(path)
        if expected != actual:
            raise PurifyLabError(f"{path.name} does not match the SHA-256 in its model card: refusing to load it")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises several types for corrupt headers
        raise PurifyLabError(f"{path.name} is not a valid safetensors file ({type(error).__name__})") from None
    return {key: (t.float() if t.is_floating_point() else t) for key, t in state.items()}


def load_weights(module: torch.nn.Module, path: str | Path, verify: bool = True) -> torch.nn.Module:
    """`module` with the verified tensors of `path`; a file of another network (or another size) is
    one line naming what does not fit, not torch's list of every key."""
    path = Path(path)
    state, own = load_state(path, verify=verify), module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    resized = [key for key in own if key in state and state[key].shape != own[key].shape]
    misfits = [
        *([f"missing {len(missing)} tensors (first '{missing[0]}')"] if missing else []),
        *([f"{len(unexpected)} unexpected (first '{unexpected[0]}')"] if unexpected else []),
        *([f"'{key}' is {tuple(state[key].shape)}, the network's {tuple(own[key].shape)}" for key in resized[:1]]),
    ]
    if misfits:
        raise PurifyLabError(f"{path.name} does not fit {type(module).__name__}: {'; '.join(misfits)}")
    module.load_state_dict(state)
    return module


def shipped_cards(weights_dir: Path | None = None) -> dict[str, dict]:
    """Every model card in weights/, by file stem: what the app and the docs list as shipped. An
    unreadable card is a one-line error naming it, not a model left out: a listing without it would
    misstate what is shipped, and loading that model fails anyway."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    return {path.stem: read_card(path.with_suffix(".safetensors")) for path in sorted(folder.glob("*.json"))}


def distinct_files(records: list[dict]) -> list[dict]:
    """Cards or a soup's member records, each file (by SHA-256) once: a member given twice weights a
    soup, but was trained once."""
    return list({record["sha256"]: record for record in records}.values())


def training_time(card: dict) -> str:
    """Training minutes as the card says, marked "(GPU)" where `training_device` records a lent GPU:
    a GPU minute is not a CPU minute, and the app and the docs must not read them alike. A weight
    soup's are its members', each marked as its own card was (the card's total adds CPU minutes only):
    by its `training_device`, as `make_soup` records it, or in the minutes' own text, as older soups did."""
    if card.get("soup_of"):
        return " + ".join(training_time(member) for member in distinct_files(card["soup_of"]))
    minutes = card.get("training_minutes")
    if minutes is None:
        return ""
    return f"{minutes} (GPU)" if "training_device" in card else f"{minutes}"


def reads_through(card: dict | None) -> str | None:
    """The purifier a classifier was calibrated to read through, in words (the smoothing base
    classifier reads through Gaussian noise); None for a classifier that reads images as they are."""
    through = (card or {}).get("reads_through")
    if not through:
        return None
    params = ", ".join(f"{key} {value:g}" for key, value in through.get("params", {}).items())
    return f"the '{through['purifier']}' purifier ({params})"


def reads_through_note(name: str, card: dict | None) -> str | None:
    """The one line a page shows beside such a classifier: read without its purifier, it is not the
    model its card measured."""
    through = reads_through(card)
    if through is None:
        return None
    return f"{name} was trained and calibrated to read X-rays through {through}; read without it, its readings are not those its card measured."


def _plain_denoiser(card: dict) -> str:
    """A purifier network's role in words, from the facts its card records."""
    if "blur_schedule" in card:
        return "cold-diffusion restorer: predicts the clean X-ray from its blurred copy"
    if card.get("kind") == "ddpm-denoiser":
        fraction = card.get("max_t_fraction")
        span = "the whole noise schedule" if fraction in (None, 1.0) else f"noise levels t <= {fraction:g} T"
        return f"DDPM noise predictor ({card.get('prediction_type', 'epsilon')}), trained on {span}"
    return card.get("kind") or ""


def plain_training(card: dict) -> str:
    """A model's training in a few plain words, from its card's config: a table row has no room for
    `training_kind`, the full record (a soup's names its members, not that they were adversarially trained)."""
    if "classes" not in card:
        return _plain_denoiser(card)
    config = card.get("training_config")
    if not config:
        return ""
    if config.get("adversarial_eps"):
        method = "TRADES" if config.get("trades_beta") else "PGD"
        parts = [f"adversarial training ({method} L-inf {config['adversarial_eps']:.3g})"]
    elif config.get("smoothing_sigma"):
        parts = [f"trained under Gaussian noise (std {config['smoothing_sigma']:g}) for randomized smoothing"]
    elif config.get("purified_half") or config.get("noise_augment"):
        parts = ["purifier-aware training"]
    elif config.get("distill_from"):
        parts = [f"distilled from {config['distill_from']}"]
    else:
        parts = ["clean training"]
    if config.get("model") == "sevit":
        parts.insert(0, "heads over the frozen vit")
    if card.get("soup_of"):
        parts.append(f"weight soup of {len(card['soup_of'])}")
    return ", ".join(parts)
