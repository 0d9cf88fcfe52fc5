"""SegSSL: label-efficient medical image segmentation (S3-Net, PolyCL, SAM, SAM 2) as a Python library.

One function per workflow; images are SimpleITK images (geometry included), label maps come back on
the input's grid, and results say what the user should know (clusters, frames visited, warnings)::

    import SimpleITK as sitk
    import SegSSLLib as segssl

    image = sitk.ReadImage("ct.nii.gz")
    liver = segssl.segment_s3net(image, seeds=[(120, 140, 60)]).label_map
    organs = segssl.propagate(image, sitk.ReadImage("one_slice.nii.gz")).label_map
    print(segssl.evaluate(organs, sitk.ReadImage("truth.nii.gz"))["mean_dice"])

Workflows: ``segment_s3net``, ``segment_polycl``, ``propagate``, ``refine``, ``pretrain``, ``finetune``,
``evaluate``. Models and weights: ``load_sam_predictor``, ``load_sam2_video_predictor``,
``resolve_weights``. Problems a user can fix raise ``SegSSLError`` with one line that names the
parameter (`sam2_checkpoint`) and the fix. docs/api.md has an example per workflow.

``import SegSSLLib`` is light: each name loads its module (and torch, where it needs it) on first use,
so the registration propagation path runs without torch. The library never imports ``slicer``; the
3D Slicer module in ``SegSSL/`` and the ``segssl`` command (``SegSSLLib.cli``) are layers over it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it; loaded on first use (PEP 562)
_EXPORTS = {
    # workflows
    "segment_s3net": "SegSSLLib.s3net.segment",
    "segment_polycl": "SegSSLLib.polycl.segment",
    "propagate": "SegSSLLib.propagation.propagate",
    "refine": "SegSSLLib.refinement.sam_refine",
    "pretrain": "SegSSLLib.polycl.workflows",
    "finetune": "SegSSLLib.polycl.workflows",
    "evaluate": "SegSSLLib.evaluation",
    # models and weights
    "load_sam_predictor": "SegSSLLib.weights.models",
    "load_sam2_video_predictor": "SegSSLLib.weights.models",
    "resolve_weights": "SegSSLLib.weights.resolve",
    "make_propagator": "SegSSLLib.propagation.propagate",
    "Sam2Propagator": "SegSSLLib.propagation.sam2",
    "RegistrationPropagator": "SegSSLLib.propagation.registration",
    # settings
    "S3NetSettings": "SegSSLLib.s3net.segment",
    "S3NetConfig": "SegSSLLib.s3net.config",
    "PolyCLSettings": "SegSSLLib.polycl.segment",
    "PropagateSettings": "SegSSLLib.propagation.propagate",
    "RegistrationSettings": "SegSSLLib.propagation.registration",
    "RefineSettings": "SegSSLLib.refinement.sam_refine",
    "PretrainOptions": "SegSSLLib.polycl.pretraining",
    "FinetuneOptions": "SegSSLLib.polycl.finetuning",
    "TrainingSettings": "SegSSLLib.polycl.workflows",
    "ModelConfig": "SegSSLLib.polycl.model",
    "IntensityWindow": "SegSSLLib.intensity",
    # results
    "S3NetResult": "SegSSLLib.s3net.segment",
    "PolyCLResult": "SegSSLLib.polycl.segment",
    "PropagateResult": "SegSSLLib.propagation.propagate",
    "RefineResult": "SegSSLLib.refinement.sam_refine",
    # errors and progress
    "SegSSLError": "SegSSLLib.errors",
    "Progress": "SegSSLLib.progress",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'SegSSLLib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.evaluation import evaluate
    from SegSSLLib.intensity import IntensityWindow
    from SegSSLLib.polycl.finetuning import FinetuneOptions
    from SegSSLLib.polycl.model import ModelConfig
    from SegSSLLib.polycl.pretraining import PretrainOptions
    from SegSSLLib.polycl.segment import PolyCLResult, PolyCLSettings, segment_polycl
    from SegSSLLib.polycl.workflows import TrainingSettings, finetune, pretrain
    from SegSSLLib.progress import Progress
    from SegSSLLib.propagation.propagate import PropagateResult, PropagateSettings, make_propagator, propagate
    from SegSSLLib.propagation.registration import RegistrationPropagator, RegistrationSettings
    from SegSSLLib.propagation.sam2 import Sam2Propagator
    from SegSSLLib.refinement.sam_refine import RefineResult, RefineSettings, refine
    from SegSSLLib.s3net.config import S3NetConfig
    from SegSSLLib.s3net.segment import S3NetResult, S3NetSettings, segment_s3net
    from SegSSLLib.weights.models import load_sam2_video_predictor, load_sam_predictor
    from SegSSLLib.weights.resolve import resolve_weights
