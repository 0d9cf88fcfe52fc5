"""Building SAM and SAM 2 from checkpoint files, safely (``weights_only=True``) and with clear errors.

SAM (segment-anything) checkpoints are plain state dicts; the architecture (ViT-B/L/H, or any
other size) is read from the tensor shapes, so MedSAM and small test models load the same way.
SAM 2 checkpoints are ``{"model": state_dict}`` and need the matching config (``sam2.1_hiera_t``...).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from SegSSLLib.checkpoints import load_tensor_file
from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

_SAM_PREFIX = "image_encoder.patch_embed.proj.weight"
_SAM2_PREFIX = "image_encoder.trunk."


@dataclass(frozen=True)
class SamArchitecture:
    """Everything that fixes the shapes of a SAM model (ViT-B: the defaults)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256


# A SAM small enough to build and run in seconds on a CPU (tests, the panel's self-test): random
# weights, only its shapes matter.
TINY_SAM = SamArchitecture(
    embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), image_size=128, window_size=4,
    prompt_dim=32, mask_in_chans=8, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


def build_sam(architecture: SamArchitecture = SamArchitecture()):
    """A segment-anything ``Sam`` with the given shapes (random weights until a state dict is loaded)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    a = architecture
    embedding = a.image_size // a.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a.depth,
            embed_dim=a.embed_dim,
            img_size=a.image_size,
            mlp_ratio=a.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a.num_heads,
            patch_size=a.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=a.global_attn_indexes,
            window_size=a.window_size,
            out_chans=a.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_dim,
            image_embedding_size=(embedding, embedding),
            input_image_size=(a.image_size, a.image_size),
            mask_in_chans=a.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth, embedding_dim=a.prompt_dim, mlp_dim=a.decoder_mlp_dim, num_heads=8
            ),
            transformer_dim=a.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=a.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def sam_architecture_of(state: dict) -> SamArchitecture:
    """Read a SAM architecture from the shapes in its state dict."""
    patch = state["image_encoder.patch_embed.proj.weight"]
    embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(state["image_encoder.pos_embed"].shape[1])
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    rel_pos = [state[f"image_encoder.blocks.{b}.attn.rel_pos_h"] for b in blocks]
    head_dim = int(rel_pos[0].shape[1])
    global_blocks = tuple(b for b, r in zip(blocks, rel_pos) if r.shape[0] == 2 * grid - 1)
    windowed = [r for r in rel_pos if r.shape[0] != 2 * grid - 1]
    decoder_layers = {int(m.group(1)) for k in state if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))}
    return SamArchitecture(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=embed_dim // head_dim,
        global_attn_indexes=global_blocks,
        image_size=grid * patch_size,
        patch_size=patch_size,
        window_size=(int(windowed[0].shape[0]) + 1) // 2 if windowed else 14,
        mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
        prompt_dim=int(state["image_encoder.neck.0.weight"].shape[0]),
        mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
        decoder_depth=len(decoder_layers),
        decoder_mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
    )


def load_sam(path: str | Path, device: torch.device | str = "cpu"):
    """A SAM (or MedSAM) model from a segment-anything checkpoint file, on ``device``."""
    path = Path(path)
    raw = load_tensor_file(path, "SAM checkpoint")
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or _SAM_PREFIX not in state:
        raise SegSSLError(
            f"`sam_checkpoint` {path} is {_describe(state)}, not a SAM (segment-anything) checkpoint — "
            "give sam_vit_b_01ec64.pth, sam_vit_l/h or medsam_vit_b.pth (see segssl weights list)"
        )
    try:
        architecture = sam_architecture_of(state)
        sam = build_sam(architecture)
        sam.load_state_dict(state)
    except (KeyError, IndexError, RuntimeError, ValueError) as exc:
        raise SegSSLError(
            f"`sam_checkpoint` {path} does not fit a SAM model ({str(exc).splitlines()[0][:160]}) — is the file complete?"
        ) from None
    log.info("SAM ViT %d-d × %d blocks, %d px input, from %s", architecture.embed_dim, architecture.depth,
             architecture.image_size, path.name)
    return sam.to(device)


def sam2_config_names() -> list[str]:
    """Config names sam2 ships, short form (``sam2.1_hiera_t``)."""
    import sam2

    folder = Path(sam2.__file__).parent / "configs"
    return sorted(p.stem for p in folder.glob("sam2*/*.yaml"))


def resolve_sam2_config(name: str) -> str:
    """``sam2.1_hiera_t``, ``sam2.1_hiera_t.yaml`` or ``configs/sam2.1/sam2.1_hiera_t.yaml`` -> hydra config path."""
    import sam2

    stem = Path(name).name.removesuffix(".yaml")
    folder = Path(sam2.__file__).parent / "configs"
    matches = sorted(folder.glob(f"sam2*/{stem}.yaml"))
    if not matches:
        raise SegSSLError(
            f"`sam2_config` {name!r} is not a config sam2 knows — use one of {', '.join(sam2_config_names())} "
            "(MedSAM2 checkpoints use sam2.1_hiera_t)"
        )
    return str(matches[0].relative_to(folder.parent))


def load_sam_predictor(checkpoint: str | Path, device: torch.device | str = "cpu", preprocess: str = "auto"):
    """A SAM box predictor for ``checkpoint``: segment-anything's, or MedSAM's for a MedSAM checkpoint.

    ``preprocess``: "sam", "medsam", or "auto" (MedSAM's for the registry's MedSAM file, else SAM's).
    """
    from segment_anything import SamPredictor

    from SegSSLLib.refinement.medsam import MedSamPredictor, sam_preprocessing

    medsam = sam_preprocessing(preprocess, checkpoint) == "medsam"
    return (MedSamPredictor if medsam else SamPredictor)(load_sam(checkpoint, device))


DEFAULT_SAM2_CONFIG = "sam2.1_hiera_t"


def sam2_settings_for(checkpoint: str | Path | None, config: str | None = None, image_size: int | None = None):
    """(config, image size) for a SAM 2 checkpoint: the given ones, else the registry's for its file name."""
    from SegSSLLib.weights.registry import registry_entry_for_file

    known = registry_entry_for_file(Path(checkpoint)) if checkpoint is not None else None
    config = config or (known.sam2_config if known else None) or DEFAULT_SAM2_CONFIG
    return config, image_size or (known.image_size if known else None)


def load_sam2_video_predictor(
    checkpoint: str | Path | None, config: str | None = None, device: torch.device | str = "cpu",
    image_size: int | None = None,
):
    """A SAM 2 video predictor from a checkpoint (``None``: random weights, for tests and benchmarks).

    ``config`` and ``image_size`` default to the registry's for the checkpoint's file name (the
    ``sam2.1_hiera_t`` config at its own 1024 px for a file the registry does not know).
    """
    from sam2.build_sam import build_sam2_video_predictor

    path = checkpoint
    config, image_size = sam2_settings_for(checkpoint, config, image_size)
    if image_size is not None and (image_size < 64 or image_size % 32):
        raise SegSSLError(f"`image_size` {image_size} must be a multiple of 32, at least 64 (1024 is SAM 2's own)")
    config_path = resolve_sam2_config(config)
    state = _sam2_state(Path(path)) if path is not None else None
    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    predictor = build_sam2_video_predictor(config_path, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    if state is not None:
        try:
            predictor.load_state_dict(state)
        except RuntimeError as exc:
            raise SegSSLError(
                f"`sam2_checkpoint` {path} does not match `sam2_config` {config} "
                f"({str(exc).splitlines()[0][:120]}...) — pick the config of that checkpoint "
                "(sam2.1_hiera_t/s/b+/l; MedSAM2 uses sam2.1_hiera_t)"
            ) from None
    if not _has_sam2_extension():
        predictor.fill_hole_area = 0  # the hole filling needs sam2's compiled extension; skip it quietly
    return predictor.to(device)


def _sam2_state(path: Path) -> dict:
    raw = load_tensor_file(path, "SAM 2 checkpoint")
    state = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith(_SAM2_PREFIX) for k in state):
        raise SegSSLError(
            f"`sam2_checkpoint` {path} is {_describe(raw.get('model', raw) if isinstance(raw, dict) else raw)}, "
            "not a SAM 2 checkpoint — give sam2.1_hiera_*.pt or MedSAM2_latest.pt (see segssl weights list)"
        )
    return state


def _describe(state) -> str:
    if not isinstance(state, dict):
        return f"a {type(state).__name__}"
    if state.get("format") == "segssl":
        return f"a SegSSL {state.get('kind')!r} model"
    if _SAM_PREFIX in state:
        return "a SAM (segment-anything) checkpoint"
    if any(str(k).startswith(_SAM2_PREFIX) for k in state):
        return "a SAM 2 checkpoint"
    return "a PyTorch file of another program"


def _has_sam2_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True
