"""The panel's choices as enums: stable keys saved in the scene, translatable labels shown.

The parameter node stores an enum member's *name* (Slicer ``parameterNodeWrapper``'s
``EnumSerializer``) and a combo box shows its ``label()`` (``QComboBoxToEnumConnector``), so renaming
or translating a label never breaks a saved scene. A member's *value* is what the command line or
the weights registry calls it. Which SAM 2 config a model needs is read from the library's weights
registry, not written here a second time.
"""

from __future__ import annotations

import enum

from SegSSLLib.errors import SegSSLError
from SegSSLLib.weights.registry import REGISTRY


def _(text: str) -> str:
    """Slicer's translation (context ``SegSSLSlicerLib.choices``); the text itself outside the app."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    try:
        return tr(text)
    except Exception:  # noqa: BLE001 - slicer-core has no application to translate with
        return text


class Device(enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"

    def label(self) -> str:
        return {Device.auto: _("Auto (GPU if there is one)"), Device.cpu: _("CPU"), Device.cuda: _("GPU (CUDA)")}[self]


class SegmentMethod(enum.Enum):
    s3net = "s3net"
    polycl = "polycl"

    def label(self) -> str:
        return {SegmentMethod.s3net: _("S3-Net"), SegmentMethod.polycl: _("PolyCL")}[self]


class PropagationBackend(enum.Enum):
    registration = "registration"
    sam2 = "sam2"

    def label(self) -> str:
        return {PropagationBackend.registration: _("Registration (no weights)"), PropagationBackend.sam2: _("SAM 2")}[self]


class Sam2Model(enum.Enum):
    """Values are names in the weights registry (``segssl weights list``)."""

    sam2_1_tiny = "sam2.1_hiera_t"
    sam2_1_small = "sam2.1_hiera_s"
    sam2_1_base_plus = "sam2.1_hiera_b+"
    sam2_1_large = "sam2.1_hiera_l"
    medsam2 = "medsam2"

    def label(self) -> str:
        return {
            Sam2Model.sam2_1_tiny: _("SAM 2.1 tiny"),
            Sam2Model.sam2_1_small: _("SAM 2.1 small"),
            Sam2Model.sam2_1_base_plus: _("SAM 2.1 base+"),
            Sam2Model.sam2_1_large: _("SAM 2.1 large"),
            Sam2Model.medsam2: _("MedSAM2"),
        }[self]

    @property
    def config(self) -> str:
        """The ``--sam2-config`` that builds this checkpoint, from the weights registry."""
        return REGISTRY[self.value].sam2_config


class SamModel(enum.Enum):
    """Values are names in the weights registry (``segssl weights list``)."""

    sam_vit_b = "sam_vit_b"
    sam_vit_l = "sam_vit_l"
    sam_vit_h = "sam_vit_h"
    medsam_vit_b = "medsam_vit_b"

    def label(self) -> str:
        return {
            SamModel.sam_vit_b: _("SAM ViT-B"),
            SamModel.sam_vit_l: _("SAM ViT-L"),
            SamModel.sam_vit_h: _("SAM ViT-H"),
            SamModel.medsam_vit_b: _("MedSAM"),
        }[self]


class RefineSource(enum.Enum):
    segment = "segment"
    roi = "roi"

    def label(self) -> str:
        return {RefineSource.segment: _("Selected segment"), RefineSource.roi: _("ROI box")}[self]


class SliceView(enum.Enum):
    """Values are the slice views' layout names."""

    auto = ""
    red = "Red"
    yellow = "Yellow"
    green = "Green"

    def label(self) -> str:
        return {
            SliceView.auto: _("Auto (the painting, else the view you last worked in)"),
            SliceView.red: _("Red"),
            SliceView.yellow: _("Yellow"),
            SliceView.green: _("Green"),
        }[self]


def member(enum_class, value):
    """An enum member from a member, a stable key (name) or a command-line value; for scripts that
    pass plain strings."""
    if isinstance(value, enum_class):
        return value
    if isinstance(value, str):
        if value in enum_class.__members__:
            return enum_class[value]
        for candidate in enum_class:
            if value in (candidate.value, candidate.label()) or value.lower() == candidate.name:
                return candidate
    names = ", ".join(enum_class.__members__)
    raise SegSSLError(f"unknown {enum_class.__name__} {value!r} — use one of {names}")


# The parameter node's enum fields (SegSSL.py's SegSSLParameterNode).
PARAMETER_ENUMS = {
    "device": Device,
    "segmentMethod": SegmentMethod,
    "sliceView": SliceView,
    "propagateBackend": PropagationBackend,
    "sam2Model": Sam2Model,
    "refineSource": RefineSource,
    "samModel": SamModel,
}


def migrate_parameters(parameter_node, fields=PARAMETER_ENUMS) -> list[str]:
    """Rewrite values that scenes saved before the enums stored (English labels such as "S3-Net")
    as the members' stable names; a value nothing matches is removed (the default is used).
    Returns the fields that changed."""
    changed = []
    for name, enum_class in fields.items():
        if not parameter_node.HasParameter(name):
            continue
        stored = parameter_node.GetParameter(name)
        try:
            key = member(enum_class, stored).name
        except SegSSLError:
            parameter_node.UnsetParameter(name)
            changed.append(name)
            continue
        if key != stored:
            parameter_node.SetParameter(name, key)
            changed.append(name)
    return changed
