"""Did pretraining learn anything useful? Two cheap checks at the end of ``segssl pretrain``.

1. **Collapse of the pretext loss.** An InfoNCE loss near zero within the first epochs means the
   task was solved by a shortcut (few, very different scans are told apart by field of view and
   intensities), not by learning anatomy.
2. **Nearest-neighbour probe of the encoder.** Bottleneck features (global average pool) of
   un-augmented body slices, every slice compared with the others by cosine similarity:

   - *scan accuracy*: is a slice's nearest neighbour from the same scan? (the slice's own
     neighbours within ``NEIGHBOURS`` slices are not eligible: they would match trivially);
   - *position accuracy*: among the slices of other scans, does the nearest one lie in the same
     fifth of the body extent (``positional.body_positions``)?

   The same probe on the randomly initialised encoder (same seed) is the baseline: random
   convolutions already separate scans by their global statistics. An encoder whose features
   separate scans but know no more about position than the random one learned "which scan", and
   fine-tuning from it can be worse than from scratch.

Either finding gives one warning line with what to do; the numbers go into the checkpoint's
provenance (``diagnostics``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# An InfoNCE loss of 0.05 means the positive outweighs all negatives together about 20 to 1: the
# pretext task is solved. Reaching it within the first epochs takes a shortcut.
COLLAPSE_LOSS = 0.05  # an epoch loss below this ...
COLLAPSE_EPOCHS = 3  # ... within this many first epochs is a collapsed pretext task
SCAN_SEPARATING = 0.9  # scan accuracy at or above this ...
# ... with a position accuracy less than this above the random encoder's. With 240 probe slices
# one accuracy has a binomial sd of up to 0.03, so a difference below 0.1 is within the noise.
POSITION_GAIN = 0.1
POSITION_BINS = 5
NEIGHBOURS = 2
PROBE_SLICES = 240  # at most this many slices, evenly spread over the scans

ADVICE = (
    "pretrain on more scans of the body region you will segment (tens, not a handful), use `strategy` P "
    "(or O/M with `label`), and keep the per-sample views and the common pixel size (the defaults); or fine-tune from scratch"
)


def loss_collapse(history: list[dict]) -> dict | None:
    """{"epoch", "loss"} of the first early epoch whose loss fell below ``COLLAPSE_LOSS``, else None."""
    for record in history[:COLLAPSE_EPOCHS]:
        if record["loss"] < COLLAPSE_LOSS:
            return {"epoch": int(record["epoch"]), "loss": float(record["loss"])}
    return None


def probe_slices(volume: np.ndarray, position: np.ndarray, limit: int = PROBE_SLICES) -> np.ndarray:
    """Global indices of the slices the probe uses: body slices, evenly spaced, the same share from every scan."""
    body = np.flatnonzero(np.isfinite(position))
    if len(body) <= limit:
        return body
    step = len(body) / limit
    return body[np.floor(np.arange(limit) * step).astype(int)]


def neighbour_accuracies(
    features: np.ndarray, volume: np.ndarray, slice_index: np.ndarray, position: np.ndarray,
    bins: int = POSITION_BINS, neighbours: int = NEIGHBOURS,
) -> dict:
    """Scan and position accuracy of cosine nearest neighbours (see the module docstring).

    features (N, D); volume, slice_index, position (N,): each row's scan, slice number in its scan
    and normalised position. Returns the accuracies and their chance levels; position entries are
    None with fewer than two scans.
    """
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    same_scan = volume[:, None] == volume[None, :]
    too_close = same_scan & (np.abs(slice_index[:, None] - slice_index[None, :]) <= neighbours)
    eligible = ~too_close
    queries = eligible.any(axis=1)
    nearest = np.where(eligible, similarity, -np.inf).argmax(axis=1)
    scan_accuracy = float(same_scan[np.arange(len(volume)), nearest][queries].mean()) if queries.any() else None
    scan_chance = float((same_scan & eligible).sum(axis=1)[queries].sum() / eligible.sum(axis=1)[queries].sum()) if queries.any() else None

    result = {"slices": int(len(volume)), "scans": int(len(np.unique(volume))),
              "scan_accuracy": scan_accuracy, "scan_chance": scan_chance,
              "position_accuracy": None, "position_chance": None}
    other = ~same_scan
    queries = other.any(axis=1)
    if queries.any():
        bin_of = np.clip(np.floor(position * bins), 0, bins - 1).astype(int)
        same_bin = bin_of[:, None] == bin_of[None, :]
        nearest_other = np.where(other, similarity, -np.inf).argmax(axis=1)
        result["position_accuracy"] = float(same_bin[np.arange(len(volume)), nearest_other][queries].mean())
        result["position_chance"] = float(((same_bin & other).sum(axis=1) / np.maximum(other.sum(axis=1), 1))[queries].mean())
    return result


@torch.no_grad()
def encoder_features(encoder: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """(N, C) globally pooled bottleneck features of ``images`` (N, 1, S, S)."""
    was_training = encoder.training
    encoder.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        bottleneck = encoder(images[start : start + batch_size].to(device))[-1]
        chunks.append(F.adaptive_avg_pool2d(bottleneck.float(), 1).flatten(1).cpu())
    encoder.train(was_training)
    return torch.cat(chunks).numpy()


def probe_encoder(encoder, baseline_encoder, images: torch.Tensor, volume, slice_index, position, device) -> dict:
    """The probe for the trained encoder and for ``baseline_encoder`` (its random initialisation)."""
    trained = neighbour_accuracies(encoder_features(encoder, images, device), volume, slice_index, position)
    baseline = neighbour_accuracies(encoder_features(baseline_encoder, images, device), volume, slice_index, position)
    return {**trained, "random_init": {k: baseline[k] for k in ("scan_accuracy", "position_accuracy")}}


def verdict(collapse: dict | None, probe: dict | None) -> str | None:
    """One warning line when pretraining learned nothing useful, else None."""
    findings = []
    if collapse is not None:
        findings.append(
            f"the pretext loss fell to {collapse['loss']:.4f} by epoch {collapse['epoch']} (a shortcut solved the task)"
        )
    if probe is not None and probe.get("position_accuracy") is not None and probe.get("scan_accuracy") is not None:
        gain = probe["position_accuracy"] - probe["random_init"]["position_accuracy"]
        if probe["scan_accuracy"] >= SCAN_SEPARATING and gain < POSITION_GAIN:
            findings.append(
                f"the encoder tells scans apart (nearest-neighbour scan accuracy {probe['scan_accuracy']:.2f}) but not "
                f"positions in the body (accuracy {probe['position_accuracy']:.2f}, random encoder "
                f"{probe['random_init']['position_accuracy']:.2f}, chance {probe['position_chance']:.2f})"
            )
    if not findings:
        return None
    return (
        "pretraining learned little that helps segmentation: " + "; ".join(findings)
        + " — fine-tuning from it may be worse than from scratch: " + ADVICE
    )
