"""A real MRML scene from ``slicer-core`` for testing the panel's node-level code without the app.

Import the fixture into a test module with ``from slicer_scene import mrml_scene``. It sets up what
the Slicer application would: ``slicer.mrmlScene``, the segmentation converter rules and the
volumes, segmentations and colours module logics behind ``slicer.modules.<name>.logic()``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

MODULE_FOLDER = Path(__file__).resolve().parents[2] / "SegSSL"
if str(MODULE_FOLDER) not in sys.path:
    sys.path.insert(0, str(MODULE_FOLDER))  # SegSSLSlicerLib, as Slicer puts the module folder on sys.path

slicer = pytest.importorskip("slicer", reason="slicer-core is needed: pip install 'segssl[test]'")
import slicer.util  # noqa: E402

_converters_registered = False


def _register_converters() -> None:
    global _converters_registered
    if _converters_registered:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for name in dir(slicer):
        if name.endswith("ConversionRule") and name.startswith("vtk"):
            factory.RegisterConverterRule(getattr(slicer, name)())
    _converters_registered = True


@pytest.fixture
def mrml_scene():
    """A fresh scene with the module logics that ``slicer.util`` expects; removed afterwards."""
    _register_converters()
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    logics = {}
    for module, logic_class in [
        ("colors", slicer.vtkSlicerColorLogic),
        ("volumes", slicer.vtkSlicerVolumesLogic),
        ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
    ]:
        logic = logic_class()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        logics[module] = logic
    application.SetModuleLogic("Colors", logics["colors"])
    previous = getattr(slicer, "mrmlScene", None), getattr(slicer, "modules", None)
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for name, logic in logics.items()}
    )
    yield scene
    scene.Clear(True)
    slicer.mrmlScene, slicer.modules = previous
