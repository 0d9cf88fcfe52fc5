"""SegSSL: label-efficient segmentation in 3D Slicer — Segment, Annotate and propagate, Refine with SAM.

A thin Qt layer. The node-level work is in ``SegSSLSlicerLib`` (tested with slicer-core outside the
app); every algorithm runs in a separate ``segssl`` process (``SegSSLLib``), so the GUI never freezes
and Cancel can stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _makeLibraryImportable() -> None:
    """For development (this folder added to the module paths): SegSSLLib sits next to SegSSL/."""
    try:
        import SegSSLLib  # noqa: F401 - packaged next to this file in a built extension
    except ImportError:
        repository = Path(__file__).resolve().parent.parent
        if (repository / "SegSSLLib" / "__init__.py").is_file():
            sys.path.insert(0, str(repository))


_makeLibraryImportable()

from SegSSLLib.errors import SegSSLError  # noqa: E402
from SegSSLLib.processes import EXIT_EVENT, SegSSLProcess  # noqa: E402
from SegSSLSlicerLib import dependencies, nodes, runs, selftest  # noqa: E402

# "Auto": the slice the painting lies on, else the view the user last worked in.
SLICE_VIEWS = ["Auto", "Red", "Yellow", "Green"]


#
# SegSSL
#


class SegSSL(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegSSL")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "SegmentEditor", "Markups"]
        self.parent.contributors = ["SegSSL developers"]
        self.parent.helpText = _(
            "Label-efficient segmentation. <b>Segment</b>: S3-Net from a seed click (no labels, no weights) or a "
            "PolyCL model. <b>Annotate and propagate</b>: paint one slice, SAM 2 or registration carries it through "
            "the volume. <b>Refine with SAM</b>: sharper masks from a segment or an ROI box. Results always go into "
            "new segments. See docs/slicer.md in the SegSSL repository."
        )
        self.parent.acknowledgementText = _(
            "S3-Net: 'Self-supervised Semantic Segmentation: Consistency over Transformation' (ICCV Workshops 2023). "
            "PolyCL: 'Domain and Task-Focused Example Selection for Data-Efficient Contrastive Medical Image "
            "Segmentation'. SAM (Meta AI, Apache-2.0), SAM 2 (Meta AI, Apache-2.0), MONAI, SimpleITK."
        )


#
# SegSSLParameterNode
#


@parameterNodeWrapper
class SegSSLParameterNode:
    """The panel's choices, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(list(runs.DEVICES))] = "auto"
    # Segment
    segmentMethod: Annotated[str, Choice(list(runs.SEGMENT_METHODS))] = "S3-Net"
    seedPoints: vtkMRMLMarkupsFiducialNode
    keepClusters: bool = True
    # Annotate and propagate
    sliceView: Annotated[str, Choice(SLICE_VIEWS)] = "Auto"
    propagateBackend: Annotated[str, Choice(list(runs.PROPAGATION_BACKENDS))] = "Registration (no weights)"
    sam2Model: Annotated[str, Choice(list(runs.SAM2_MODELS))] = "SAM 2.1 tiny"
    # Refine with SAM
    refineSource: Annotated[str, Choice(list(runs.REFINE_SOURCES))] = "Selected segment"
    refineRoi: vtkMRMLMarkupsROINode
    samModel: Annotated[str, Choice(list(runs.SAM_MODELS))] = "SAM ViT-B"
    replaceRefinedSegment: bool = False
    # Model and weight files are not here: their path fields remember them across scenes (settingKey).


#
# SegSSLWidget
#


class SegSSLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    # Buttons that start something: disabled while a run is in flight.
    ACTION_BUTTONS = (
        "segmentButton", "propagateButton", "refineButton", "addClusterButton",
        "sam2DownloadButton", "samDownloadButton", "installDependenciesButton",
    )

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # (SegSSLProcess, title, on_success, cleanup) while a run is in flight
        self._runStarted = 0.0
        self._pollTimer = None
        self._weightsTimer = None
        self._weightsFound = {}  # weights name -> Path, None (not downloaded) or "unknown"
        self._weightsLookups = {}  # weights name -> thread
        self._lastVolume = None  # input volume seen last, to notice a change
        self._clusters = None  # runs.ClusterMap of the last S3-Net run, while its volume is the input

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegSSL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegSSLLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._onPoll)
        self._weightsTimer = qt.QTimer()
        self._weightsTimer.setInterval(300)
        self._weightsTimer.connect("timeout()", self._showWeightsStatus)

        editor = self.ui.segmentEditorWidget
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setSegmentationNodeSelectorVisible(False)
        editor.setSourceVolumeNodeSelectorVisible(False)
        self.ui.seedPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.seedPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.progressBar.hide()
        self.ui.cancelButton.enabled = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.seedPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.seedPlaceWidget.setCurrentNode)
        self.ui.outputSegmentationSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.onOutputSegmentationAdded)
        editor.connect("currentSegmentIDChanged(QString)", self.onEditorSegmentChanged)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.addClusterButton.connect("clicked(bool)", self.onAddCluster)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.sam2DownloadButton.connect("clicked(bool)", lambda: self.onDownload("sam2"))
        self.ui.samDownloadButton.connect("clicked(bool)", lambda: self.onDownload("sam"))
        for pathEdit in (self.ui.sam2CheckpointPathLineEdit, self.ui.samCheckpointPathLineEdit):
            pathEdit.connect("currentPathChanged(QString)", lambda _path: self._showWeightsStatus())

        self.initializeParameterNode()
        self._showDependencyStatus()

    def cleanup(self) -> None:
        """The application closes: stop a run rather than leave it behind."""
        if self._run:
            self._run[0].cancel(grace_seconds=1.0)
        for timer in (self._pollTimer, self._weightsTimer):
            if timer:
                timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.updateWidgetFromMRML()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.ui.segmentEditorWidget.removeViewObservations()  # as Slicer's Segment Editor: views are free again
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._lastVolume = None
        # A run's result would arrive in a closed scene: stop it (its nodes are going away).
        if self._run is not None:
            self._run[0].cancel(grace_seconds=1.0)
        self.setParameterNode(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()
        self._clearClusters()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ----------------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        # The editor's own parameter node (a singleton) is gone after a scene close: set it each time.
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode: SegSSLParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" property in SegSSL.ui.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        volume, segmentation = parameters.inputVolume, parameters.outputSegmentation
        if self._clusters is not None and self._clusters.volume_node is not volume:
            self._clearClusters()
        if volume is not self._lastVolume:
            self._lastVolume = volume
            if volume is not None and segmentation is None:
                # A segmentation to paint in right away (the editor needs one to add a segment). Only
                # when the volume changes: choosing "(new segmentation)" by hand keeps it empty.
                parameters.outputSegmentation = nodes.new_segmentation(volume, f"{volume.GetName()} SegSSL")
                segmentation = parameters.outputSegmentation
        editor = self.ui.segmentEditorWidget
        if editor.segmentationNode() is not segmentation:
            editor.setSegmentationNode(segmentation)
        if editor.sourceVolumeNode() is not volume:
            editor.setSourceVolumeNode(volume)
        for selector in (self.ui.propagateSegmentSelector, self.ui.refineSegmentSelector):
            if selector.currentNode() is not segmentation:
                selector.setCurrentNode(segmentation)
        s3net = parameters.segmentMethod == "S3-Net"
        fromSegment = parameters.refineSource == "Selected segment"
        visibility = {
            ("seedPointsLabel", "seedPointsSelector", "seedPlaceLabel", "seedPlaceWidget", "keepClustersCheckBox",
             "clusterLabel", "clusterWidget"): s3net,
            ("polyclModelLabel", "polyclModelPathLineEdit"): not s3net,
            ("sam2ModelsWidget",): runs.PROPAGATION_BACKENDS[parameters.propagateBackend] == "sam2",
            ("refineSegmentLabel", "refineSegmentSelector", "replaceSegmentCheckBox"): fromSegment,
            ("refineRoiLabel", "refineRoiSelector"): not fromSegment,
        }
        for names, visible in visibility.items():
            for name in names:
                getattr(self.ui, name).visible = visible
        self._lookupWeights()
        self._updateButtons()

    def _updateButtons(self) -> None:
        busy = self._run is not None
        hasVolume = bool(self._parameterNode and self._parameterNode.inputVolume)
        for name in self.ACTION_BUTTONS:
            getattr(self.ui, name).enabled = not busy
        for name in ("segmentButton", "propagateButton", "refineButton"):
            button = getattr(self.ui, name)
            button.enabled = not busy and hasVolume
            button.toolTip = _("Select an input volume first") if not hasVolume else ""
        self.ui.addClusterButton.enabled = not busy and self.ui.clusterComboBox.count > 0
        self.ui.cancelButton.enabled = busy

    # -- the three workflows -----------------------------------------------------------------------

    def onSegment(self) -> None:
        parameters = self._parameterNode
        with self._reportErrors(_("Segment")):
            if not self._dependenciesReady():
                return
            prepared = runs.prepare_segment(
                parameters.inputVolume, parameters.segmentMethod, parameters.device,
                checkpoint=self.ui.polyclModelPathLineEdit.currentPath, seeds_node=parameters.seedPoints,
                keep_clusters=parameters.keepClusters, work_parent=self.logic.workFolder(),
            )
            self._startImport(prepared)

    def onPropagate(self) -> None:
        parameters = self._parameterNode
        with self._reportErrors(_("Propagate")):
            if not self._dependenciesReady():
                return
            segmentation = self._paintedSegmentation()
            segmentIds = self._segmentsToPropagate()
            prepared = runs.prepare_propagate(
                parameters.inputVolume, segmentation, segmentIds, self._chosenSliceNode(),
                parameters.propagateBackend, parameters.device, sam2_model=parameters.sam2Model,
                sam2_checkpoint=self._checkpoint("sam2"), work_parent=self.logic.workFolder(),
            )
            self._startImport(prepared)

    def _chosenSliceNode(self):
        """The view chosen under 'Painted in view', or None for Auto."""
        view = self._parameterNode.sliceView
        return None if view == "Auto" else self.logic.sliceNode(view)

    def _workingAxis(self):
        """Refinement's slice axis: that of the chosen view, else of the view last worked in."""
        view, volume = self._chosenSliceNode() or nodes.active_slice_node(), self._parameterNode.inputVolume
        return nodes.view_axis(view, volume) if view is not None and volume is not None else None

    def onEditorSegmentChanged(self, segmentId: str) -> None:
        """Propagate what is being painted: the selection follows the editor's current segment."""
        if segmentId:
            self.ui.propagateSegmentSelector.setSelectedSegmentIDs([segmentId])

    def _segmentsToPropagate(self) -> list[str]:
        chosen = list(self.ui.propagateSegmentSelector.selectedSegmentIDs())
        current = self.ui.segmentEditorWidget.currentSegmentID()
        return chosen or ([current] if current else [])

    def onRefine(self) -> None:
        parameters = self._parameterNode
        with self._reportErrors(_("Refine with SAM")):
            if not self._dependenciesReady():
                return
            fromSegment = parameters.refineSource == "Selected segment"
            segmentation = self._paintedSegmentation() if fromSegment else self._outputSegmentation()
            segmentId = self.ui.refineSegmentSelector.currentSegmentID()
            replace = parameters.replaceRefinedSegment and parameters.refineSource == "Selected segment"
            if replace and segmentId:
                name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
                if not slicer.util.confirmOkCancelDisplay(
                    _("Replace the voxels of segment '{name}' with the refined mask?").format(name=name),
                    windowTitle=_("Refine with SAM"),
                ):
                    return
            prepared = runs.prepare_refine(
                parameters.inputVolume, parameters.refineSource, parameters.device,
                sam_model=parameters.samModel, sam_checkpoint=self._checkpoint("sam"),
                segmentation_node=segmentation, segment_id=segmentId, roi_node=parameters.refineRoi,
                replace=replace, axis=self._workingAxis(), work_parent=self.logic.workFolder(),
            )
            self._startImport(prepared)

    def _startImport(self, prepared: runs.PreparedRun) -> None:
        """Run a prepared command; on success its result becomes new segments of the output."""
        volume, segmentation = self._parameterNode.inputVolume, self._outputSegmentation()
        nodes.require_same_transform(segmentation, volume)  # before the run, not when its result arrives

        def importResult(process):
            result = runs.finish(prepared, segmentation, volume)
            segmentation.CreateDefaultDisplayNodes()
            if result.clusters is not None:
                self._showClusters(result.clusters)
            if result.empty:
                return _("{title} found nothing; no segment was added or changed").format(title=prepared.title)
            names = [segmentation.GetSegmentation().GetSegment(i).GetName() for i in result.segment_ids.values()]
            self.ui.segmentEditorWidget.setCurrentSegmentID(next(iter(result.segment_ids.values())))
            return _("{title} done: {names}").format(title=prepared.title, names=", ".join(names))

        self._start(prepared.process(self.logic.pythonExecutable()), prepared.title, importResult, prepared.cleanup)

    def _outputSegmentation(self):
        """The output segmentation; a new one (on the input's grid) if none is selected."""
        parameters = self._parameterNode
        if parameters.outputSegmentation is None:
            if parameters.inputVolume is None:
                raise SegSSLError("no input volume is selected — load a CT or MR volume and select it as Input volume")
            # Under the volume's transform: results are arrays on the volume's grid.
            parameters.outputSegmentation = nodes.new_segmentation(parameters.inputVolume, f"{parameters.inputVolume.GetName()} SegSSL")
        return parameters.outputSegmentation

    def _paintedSegmentation(self):
        """The output segmentation when the run starts from its segments (never a new, empty one)."""
        segmentation = self._parameterNode.outputSegmentation
        if segmentation is None or segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            raise SegSSLError(
                "no segment to start from — add a segment in the editor below (Output segmentation in Inputs) and paint it"
            )
        return segmentation

    def onOutputSegmentationAdded(self, segmentation) -> None:
        """'Create new Segmentation' in the Output list: place it like the input volume."""
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if volume is not None:
            segmentation.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
            segmentation.CreateDefaultDisplayNodes()
            nodes.ensure_reference_geometry(segmentation, volume)

    # -- S3-Net clusters ---------------------------------------------------------------------------

    def _showClusters(self, clusters: runs.ClusterMap) -> None:
        """Show the cluster map as a label layer and list its clusters, largest first."""
        slicer.util.setSliceViewerLayers(label=clusters.node, labelOpacity=0.5)
        self.ui.clusterComboBox.clear()
        for value, count in clusters.counts():
            self.ui.clusterComboBox.addItem(_("cluster {value} ({count} voxels)").format(value=value, count=count), value)
        self._clusters = clusters
        self._updateButtons()

    def _clearClusters(self) -> None:
        """Forget the cluster map (scene closed, another volume): its clusters belong to the old one."""
        self._clusters = None
        self.ui.clusterComboBox.clear()
        self._updateButtons()

    def onAddCluster(self) -> None:
        with self._reportErrors(_("Add cluster")):
            if self._clusters is None:
                raise SegSSLError("there is no cluster map — run Segment with S3-Net and 'Keep all clusters' first")
            value = int(self.ui.clusterComboBox.currentData)
            segmentId = self._clusters.add(value)
            self.ui.statusLabel.text = _("added cluster {value} as a new segment").format(value=value)
            if self._clusters.segmentation_node is self.ui.segmentEditorWidget.segmentationNode():
                self.ui.segmentEditorWidget.setCurrentSegmentID(segmentId)

    # -- weights -----------------------------------------------------------------------------------

    def _weightsName(self, kind: str) -> str:
        parameters = self._parameterNode
        return runs.SAM2_MODELS[parameters.sam2Model][0] if kind == "sam2" else runs.SAM_MODELS[parameters.samModel]

    def _chosenFile(self, kind: str):
        pathEdit = self.ui.sam2CheckpointPathLineEdit if kind == "sam2" else self.ui.samCheckpointPathLineEdit
        return runs.given_file(pathEdit.currentPath)

    def _checkpoint(self, kind: str):
        """The file the user browsed to, else the downloaded weights of the chosen model."""
        chosen = self._chosenFile(kind)
        if chosen is not None:
            return chosen
        found = self._weightsFound.get(self._weightsName(kind))
        return found if isinstance(found, Path) else None

    def _lookupWeights(self) -> None:
        """Ask ``segssl weights path`` (in a thread: it starts a process) where the chosen weights are."""
        if self._parameterNode is None or dependencies.describe_missing():
            self._showWeightsStatus()  # without the packages `segssl weights` cannot run yet
            return
        try:
            python = self.logic.pythonExecutable()
        except SegSSLError:
            return
        for kind in ("sam2", "sam"):
            name = self._weightsName(kind)
            if name in self._weightsFound or name in self._weightsLookups:
                continue

            def lookup(name=name):
                try:
                    self._weightsFound[name] = runs.weights_file(name, python=python) or None
                except Exception:  # noqa: BLE001 - an older SegSSL without `segssl weights`
                    self._weightsFound[name] = "unknown"

            thread = threading.Thread(target=lookup, daemon=True)
            self._weightsLookups[name] = thread
            thread.start()
        self._weightsTimer.start()
        self._showWeightsStatus()

    def _showWeightsStatus(self) -> None:
        if self._parameterNode is None:
            return
        for kind, label in (("sam2", self.ui.sam2WeightsStatusLabel), ("sam", self.ui.samWeightsStatusLabel)):
            name = self._weightsName(kind)
            chosen = self._chosenFile(kind)
            found = self._weightsFound.get(name)
            if chosen is None and dependencies.describe_missing():
                label.text = _("install the Python packages first (Inputs section)")
            elif chosen is not None:
                label.text = _("using {file}").format(file=chosen.name) if chosen.is_file() else _("file not found: {file}").format(file=chosen)
            elif name in self._weightsLookups and name not in self._weightsFound:
                label.text = _("checking...")
            elif isinstance(found, Path):
                label.text = _("downloaded ({file})").format(file=found.name)
            elif found == "unknown":
                label.text = _("unknown: this SegSSL has no weight manager; Browse to a file")
            else:
                label.text = _("not downloaded: Download, or Browse to a file you have")
        self._weightsLookups = {n: t for n, t in self._weightsLookups.items() if t.is_alive()}
        if not self._weightsLookups:
            self._weightsTimer.stop()

    def onDownload(self, kind: str) -> None:
        name = self._weightsName(kind)
        if not slicer.util.confirmOkCancelDisplay(
            _("Download the '{name}' weights from their official site into SegSSL's weights folder? "
              "The checksum is verified. Large files take a while; you can cancel.").format(name=name),
            windowTitle=_("SegSSL weights"),
        ):
            return
        with self._reportErrors(_("Download")):
            if not self._dependenciesReady():
                return

            def lookAgain(process):
                self._weightsFound.pop(name, None)
                self._lookupWeights()
                return _("weights '{name}' downloaded").format(name=name)

            process = SegSSLProcess(runs.download_arguments(name), python=self.logic.pythonExecutable())
            self._start(process, _("download of {name}").format(name=name), lookAgain)

    # -- running, progress, cancel -----------------------------------------------------------------

    def _start(self, process, title: str, onSuccess, cleanup=None) -> None:
        if self._run is not None:  # a click that slipped through while busy
            if cleanup:
                cleanup()
            return
        try:
            process.start()
        except OSError as error:
            if cleanup:
                cleanup()
            raise SegSSLError(f"cannot start {process.command[0]}: {error}") from None
        self._run = (process, title, onSuccess, cleanup)
        self._runStarted = time.monotonic()
        self.ui.progressBar.show()
        self.ui.progressBar.setRange(0, 0)
        self.ui.statusLabel.text = _("{title}: starting...").format(title=title)
        self._updateButtons()
        self._pollTimer.start()

    def _onPoll(self) -> None:
        if self._run is None:
            self._pollTimer.stop()
            return
        process, title = self._run[0], self._run[1]
        for event in process.poll():
            if event.get("event") in ("log", "text"):
                logging.info("segssl: %s", event.get("message"))
            if event.get("event") == EXIT_EVENT:
                self._finishRun()
                return
        status = process.status
        if status.fraction is None:
            self.ui.progressBar.setRange(0, 0)  # unknown length: busy indicator
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = int(round(100 * status.fraction))
        elapsed = int(time.monotonic() - self._runStarted)
        state = _("cancelling") if process.cancelled else (status.message or _("starting..."))
        self.ui.statusLabel.text = f"{title}: {state} ({elapsed} s)"

    def _finishRun(self) -> None:
        self._pollTimer.stop()
        process, title, onSuccess, cleanup = self._run
        try:
            if process.cancelled:
                self.ui.statusLabel.text = _("{title} cancelled; nothing was changed").format(title=title)
            elif process.returncode != 0:
                self.ui.statusLabel.text = _("{title} failed").format(title=title)
                slicer.util.errorDisplay(process.error_message, windowTitle=_("SegSSL"))
            else:
                with self._reportErrors(title):
                    self.ui.statusLabel.text = onSuccess(process)
        finally:
            if cleanup:
                cleanup()
            self._run = None
            self.ui.progressBar.hide()
            self._updateButtons()

    def onCancel(self) -> None:
        if self._run is not None:
            self._run[0].cancel()
            self.ui.cancelButton.enabled = False

    @contextlib.contextmanager
    def _reportErrors(self, what: str):
        """A user's mistake becomes its one-line message; anything else is logged in full too."""
        try:
            yield
        except SegSSLError as error:
            self.ui.statusLabel.text = str(error)
            slicer.util.errorDisplay(str(error), windowTitle=what)
        except Exception as error:  # noqa: BLE001 - never let a traceback be all the user sees
            logging.exception("SegSSL: %s failed", what)
            slicer.util.errorDisplay(f"{what} failed: {error}", windowTitle=what)

    # -- dependencies ------------------------------------------------------------------------------

    def _showDependencyStatus(self) -> None:
        missing = dependencies.describe_missing()
        self.ui.dependencyStatusLabel.text = missing or _("all Python packages are installed")
        self.ui.installDependenciesButton.visible = bool(missing)
        self._lookupWeights()

    def _dependenciesReady(self) -> bool:
        if not dependencies.describe_missing():
            return True
        installed = self.logic.installDependencies(askConfirmation=True)
        self._showDependencyStatus()
        return installed and not dependencies.describe_missing()

    def onInstallDependencies(self) -> None:
        with self._reportErrors(_("Install dependencies")):
            self.logic.installDependencies(askConfirmation=True)
        self._showDependencyStatus()


#
# SegSSLLogic
#


class SegSSLLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable from scripts: prepare with ``SegSSLSlicerLib.runs``, then
    ``run`` (blocking) — the widget starts the same processes without blocking."""

    def getParameterNode(self):
        return SegSSLParameterNode(super().getParameterNode())

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer: Slicer's Python with its environment (sys.executable is the application)."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        found = shutil.which("PythonSlicer") or str(Path(slicer.app.slicerHome) / "bin" / name)
        if not Path(found).is_file():
            raise SegSSLError("PythonSlicer was not found next to Slicer — reinstall 3D Slicer")
        return found

    @staticmethod
    def workFolder() -> str:
        return slicer.app.temporaryPath

    @staticmethod
    def segmentEditorNode():
        tag = "SegSSL"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node

    @staticmethod
    def sliceNode(viewName: str):
        widget = slicer.app.layoutManager().sliceWidget(viewName) if slicer.app.layoutManager() else None
        if widget is None:
            raise SegSSLError(f"the {viewName} view is not in the current layout — choose a layout that shows it")
        return widget.mrmlSliceNode()

    def run(self, prepared: runs.PreparedRun, segmentationNode, volumeNode, timeout=None) -> runs.RunResult:
        """Run a prepared command to its end and import the result (blocks; for scripts and tests)."""
        return runs.run_and_finish(prepared, segmentationNode, volumeNode, python=self.pythonExecutable(), timeout=timeout)

    def installDependencies(self, askConfirmation: bool = True) -> bool:
        """torch through PyTorchUtils, the rest with pip; Slicer's own packages are never replaced.

        Returns False when the user declines. Only ever called on a user action.
        """
        if not dependencies.python_supported():
            raise SegSSLError(dependencies.describe_missing())
        torchMissing = dependencies.missing(dependencies.TORCH_REQUIREMENTS)
        pipMissing = dependencies.missing(dependencies.PIP_REQUIREMENTS)
        if not torchMissing and not pipMissing:
            return True
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("SegSSL needs these Python packages in Slicer's Python environment. Install them now? "
              "This downloads several GB for PyTorch and takes minutes."),
            windowTitle=_("SegSSL - install Python packages"),
            detailedText="\n".join(torchMissing + pipMissing),
        ):
            return False
        try:
            if torchMissing:
                self._installTorch()
            if pipMissing:
                self._pipInstall(pipMissing)
        finally:
            dependencies.refresh()  # what is installed now, even after a failure half-way
        return True

    @staticmethod
    def _installTorch() -> None:
        try:
            import PyTorchUtils
        except ImportError:
            raise SegSSLError(
                "SegSSL needs PyTorch: install the 'PyTorch' extension with the Extensions Manager, restart Slicer, "
                "then click Install dependencies again"
            ) from None
        torchRequirement, visionRequirement = (r.split(">=", 1)[1] for r in dependencies.TORCH_REQUIREMENTS)
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=f">={torchRequirement}",
            torchvisionVersionRequirement=f">={visionRequirement}",
        )
        if torch is None:
            raise SegSSLError("PyTorch was not installed — use the PyTorch Utils module to install it, then try again")

    @staticmethod
    def _pipInstall(requirements: list[str]) -> None:
        constraints = Path(slicer.app.temporaryPath) / "SegSSL-constraints.txt"
        from SegSSLLib.atomic import write_text_atomically

        write_text_atomically(constraints, dependencies.constraints_text(), "pip constraints")
        try:
            import slicer.packaging as packaging  # Slicer 5.12 and newer
        except ImportError:
            packaging = None
        restartNeeded = dependencies.imported_among(requirements)
        # Called after torch is installed: source builds (sam2) compile against it.
        for arguments, environment in dependencies.pip_steps(requirements, constraints):
            if not environment and packaging is not None and hasattr(packaging, "pip_ensure"):
                # Confirmation was asked already; pip_ensure offers the restart itself when needed.
                names = arguments[: arguments.index("-c")]
                packaging.pip_ensure(names, constraints=str(constraints), prompt_install=False, requester="SegSSL")
                restartNeeded = [r for r in restartNeeded if r not in names]
                continue
            with dependencies.environment_set(environment):
                slicer.util.pip_install(arguments)
        if restartNeeded and slicer.util.confirmYesNoDisplay(
            _("Updated packages were already loaded ({names}). Restart Slicer now so they are used?").format(
                names=", ".join(restartNeeded)
            ),
            windowTitle=_("SegSSL"),
        ):
            slicer.util.restart()


#
# SegSSLTest
#


class SegSSLTest(ScriptedLoadableModuleTest):
    """The three workflows on a generated phantom (no downloads); see SegSSLSlicerLib/selftest.py."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_with_s3net()
        self.setUp()
        self.test_propagate_with_registration()
        self.setUp()
        self.test_refine_without_weights_explains_what_to_do()
        self.setUp()
        self.test_refine_with_a_tiny_random_sam()

    def _work(self) -> Path:
        folder = Path(slicer.app.temporaryPath) / "SegSSLTest"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def test_segment_with_s3net(self):
        self.delayDisplay("S3-Net segmentation from a seed on a phantom")
        volume, segmentation, truth = selftest.add_phantom()
        score = selftest.check_segment(volume, segmentation, truth, SegSSLLogic.pythonExecutable(), self._work())
        self.delayDisplay(f"S3-Net liver Dice {score:.2f}")

    def test_propagate_with_registration(self):
        self.delayDisplay("Propagation of one painted slice with the registration backend")
        volume, segmentation, truth = selftest.add_phantom()
        red = SegSSLLogic.sliceNode("Red")
        score = selftest.check_propagate(volume, segmentation, truth, red, SegSSLLogic.pythonExecutable(), self._work())
        self.delayDisplay(f"propagated liver Dice {score:.2f}")

    def test_refine_without_weights_explains_what_to_do(self):
        self.delayDisplay("Refine with SAM without weights")
        volume, segmentation, truth = selftest.add_phantom()
        message = selftest.check_refine_without_weights(volume, segmentation, truth, self._work())
        self.delayDisplay(f"refused as expected: {message}")

    def test_refine_with_a_tiny_random_sam(self):
        self.delayDisplay("Refine with SAM: a tiny randomly initialised SAM (no download)")
        missing = selftest.refine_dependencies_missing()
        if missing:
            self.delayDisplay(missing)
            return
        volume, segmentation, truth = selftest.add_phantom()
        count = selftest.check_refine(volume, segmentation, truth, SegSSLLogic.pythonExecutable(), self._work())
        self.delayDisplay(f"refined the liver on {count} slices")
