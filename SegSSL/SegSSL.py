"""SegSSL: label-efficient segmentation in 3D Slicer — Segment, Annotate and propagate, Refine with SAM.

A thin Qt layer: it binds widgets to ``SegSSLSlicerLib.controller`` (the run state machine, the view
the user works in, imports, installs; tested with slicer-core outside the app). Every algorithm and
every package install runs in a separate process, so the GUI never freezes and Cancel can stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

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
from slicer.parameterNodeWrapper import parameterNodeWrapper
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
from SegSSLLib.processes import SegSSLProcess  # noqa: E402
from SegSSLSlicerLib import choices, controller, dependencies, installing, interactive, nodes, runs, selftest  # noqa: E402
from SegSSLSlicerLib.choices import (  # noqa: E402
    Device,
    PropagationBackend,
    RefineSource,
    Sam2Model,
    SamModel,
    SegmentMethod,
    SliceView,
)


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
    """The panel's choices, saved with the scene: enums are stored by their stable name and shown with
    their translatable ``label()`` (SegSSLSlicerLib/choices.py)."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Device = Device.auto
    # Segment
    segmentMethod: SegmentMethod = SegmentMethod.s3net
    seedPoints: vtkMRMLMarkupsFiducialNode
    keepClusters: bool = False  # the click route (fast, measured better) unless the user wants every cluster
    showClusters: bool = True
    # Annotate and propagate
    sliceView: SliceView = SliceView.auto
    propagateBackend: PropagationBackend = PropagationBackend.registration
    sam2Model: Sam2Model = Sam2Model.sam2_1_tiny
    # Point and box prompts for SAM 2 on the slice the user works on
    promptPoints: vtkMRMLMarkupsFiducialNode
    promptNegativePoints: vtkMRMLMarkupsFiducialNode
    promptBox: vtkMRMLMarkupsROINode
    # Refine with SAM
    refineSource: RefineSource = RefineSource.segment
    refineRoi: vtkMRMLMarkupsROINode
    samModel: SamModel = SamModel.sam_vit_b
    replaceRefinedSegment: bool = False
    # Model and weight files are not here: their path fields remember them across scenes
    # (settingKey, written with addCurrentPathToHistory when a run uses the file).


#
# SegSSLWidget
#


class SegSSLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    # Buttons that start something: disabled while a run, a download or an install is in flight.
    ACTION_BUTTONS = (
        "segmentButton", "propagateButton", "promptButton", "refineButton", "addClusterButton",
        "sam2DownloadButton", "samDownloadButton", "installDependenciesButton",
    )
    # What each action needs installed (keys of dependencies.WORKFLOW_REQUIREMENTS) is decided per click.

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.jobs = controller.RunController()  # the one background job: run, download or install
        self.views = controller.ViewTracker()
        self.weights = controller.WeightsLookups()
        self.deviceProbe = controller.DeviceProbe()
        self._estimate = ""  # a CPU time estimate shown with the running job's progress
        self._pollTimer = None
        self._statusTimer = None
        self._lastVolume = None  # input volume seen last, to notice a change
        self._clusters = None  # runs.ClusterMap of the last S3-Net run, while its volume is the input
        self._editorSegment = ""  # the editor's selected segment, to follow it in the tick list
        self._interactive = None  # interactive.InteractivePanel: the one `segssl serve` worker, started on first use

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegSSL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.logic = SegSSLLogic()

        # As Slicer's Segment Editor module: the editor node first, then the scene (the scene's automatic
        # selections are then saved in that node). setMRMLScene reaches the editor through SegSSL.ui's
        # mrmlSceneChanged connections.
        editor = self.ui.segmentEditorWidget
        editor.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        uiWidget.setMRMLScene(slicer.mrmlScene)
        editor.setSegmentationNodeSelectorVisible(False)
        editor.setSourceVolumeNodeSelectorVisible(False)
        self.ui.seedPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.seedPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.progressBar.hide()
        self.ui.cancelButton.enabled = False

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self._onPoll)
        self._statusTimer = qt.QTimer()  # weights look-ups and the device probe run in threads
        self._statusTimer.setInterval(300)
        self._statusTimer.connect("timeout()", self._showStatus)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.views.attach(slicer.mrmlScene)

        self.ui.seedPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.seedPlaceWidget.setCurrentNode)
        self.ui.outputSegmentationSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.onOutputSegmentationAdded)
        editor.connect("currentSegmentIDChanged(QString)", self.onEditorSegmentChanged)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.addClusterButton.connect("clicked(bool)", self.onAddCluster)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.promptButton.connect("clicked(bool)", self.onPrompt)
        # The worker ends with the application (also when the module is never unloaded before exit).
        slicer.app.connect("aboutToQuit()", lambda: self._stopWorker(graceSeconds=0))
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.sam2DownloadButton.connect("clicked(bool)", lambda: self.onDownload("sam2"))
        self.ui.samDownloadButton.connect("clicked(bool)", lambda: self.onDownload("sam"))
        for pathEdit in (self.ui.sam2CheckpointPathLineEdit, self.ui.samCheckpointPathLineEdit, self.ui.polyclModelPathLineEdit):
            pathEdit.connect("currentPathChanged(QString)", lambda _path: self._onParameterNodeModified())

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """The application closes: stop a job rather than leave it behind, and free the views."""
        self.jobs.cancel(grace_seconds=1.0)
        self._stopWorker()
        for timer in (self._pollTimer, self._statusTimer):
            if timer:
                timer.stop()
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.removeViewObservations()
        self.views.detach()
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
        self.jobs.cancel(grace_seconds=1.0)
        self._stopWorker()  # what it holds belongs to the scene that closes
        self.setParameterNode(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()
        self.views.forget()
        self._clearClusters()

    def onSceneEndClose(self, caller, event) -> None:
        self.views.attach(slicer.mrmlScene)
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ----------------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        # The editor's own parameter node (a singleton) is gone after a scene close: set it each time.
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.setParameterNode(self.logic.getParameterNode())
        if not controller.accepts_input_volume(self._parameterNode.inputVolume):
            self._parameterNode.inputVolume = controller.default_input_volume(slicer.mrmlScene)

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
        # PolyCL is offered once a model file is chosen (the hint says how to make one).
        hasModel = self._chosenFile(self.ui.polyclModelPathLineEdit) is not None
        self._setItemEnabled(self.ui.segmentMethodComboBox, list(SegmentMethod).index(SegmentMethod.polycl), hasModel)
        if parameters.segmentMethod is SegmentMethod.polycl and not hasModel:
            parameters.segmentMethod = SegmentMethod.s3net
            return  # this change calls back here
        s3net = parameters.segmentMethod is SegmentMethod.s3net
        fromSegment = parameters.refineSource is RefineSource.segment
        visibility = {
            ("seedPointsLabel", "seedPointsSelector", "seedPlaceLabel", "seedPlaceWidget", "keepClustersCheckBox",
             "clusterLabel", "clusterWidget"): s3net,
            ("polyclHintLabel",): not hasModel,
            ("sam2ModelsWidget",): parameters.propagateBackend is PropagationBackend.sam2,
            ("refineSegmentLabel", "refineSegmentSelector", "replaceSegmentCheckBox"): fromSegment,
            ("refineRoiLabel", "refineRoiSelector"): not fromSegment,
        }
        for names, visible in visibility.items():
            for name in names:
                getattr(self.ui, name).visible = visible
        if self._clusters is not None and controller.node_present(self._clusters.node):
            if controller.label_layer_shown(slicer.mrmlScene, self._clusters.node) != parameters.showClusters:
                controller.show_label_layer(slicer.mrmlScene, self._clusters.node, parameters.showClusters)
        self._showStatus()
        self._updateButtons()

    @staticmethod
    def _setItemEnabled(comboBox, index: int, enabled: bool) -> None:
        """Enable one item of a combo box (its default model is a QStandardItemModel)."""
        try:
            item = comboBox.model().item(index)
        except AttributeError:  # another model: leave it; prepare_segment refuses with the same hint
            return
        if item is not None:
            item.setEnabled(enabled)

    def _updateButtons(self) -> None:
        busy = self.jobs.busy
        hasVolume = bool(self._parameterNode and self._parameterNode.inputVolume)
        for name in self.ACTION_BUTTONS:
            getattr(self.ui, name).enabled = not busy
        for name in ("segmentButton", "propagateButton", "promptButton", "refineButton"):
            button = getattr(self.ui, name)
            button.enabled = not busy and hasVolume
            button.toolTip = _("Select an input volume first") if not hasVolume else ""
        self.ui.addClusterButton.enabled = not busy and self.ui.clusterComboBox.count > 0
        self.ui.showClustersCheckBox.enabled = self._clusters is not None
        self.ui.cancelButton.enabled = busy and not self.jobs.job.process.cancelled

    # -- the three workflows -----------------------------------------------------------------------

    def onSegment(self) -> None:
        parameters = self._parameterNode
        with self._reportErrors(_("Segment")):
            method = parameters.segmentMethod
            if not self._packagesReady(method.value, method.label(), self.onSegment):
                return
            model = self.ui.polyclModelPathLineEdit
            prepared = runs.prepare_segment(
                parameters.inputVolume, method, parameters.device,
                checkpoint=model.currentPath, seeds_node=parameters.seedPoints,
                keep_clusters=parameters.keepClusters, work_parent=self.logic.workFolder(),
            )
            if method is SegmentMethod.polycl:
                model.addCurrentPathToHistory()  # settingKey alone only reads the history (ctkPathLineEdit)
            self._startImport(prepared)

    def onPropagate(self) -> None:
        """Through the interactive worker: the volume is opened once, the painted slices of the ticked
        segments are the drawings, a correction recomputes only what it can change (docs/slicer.md)."""
        parameters = self._parameterNode
        with self._reportErrors(_("Propagate")):
            backend = parameters.propagateBackend
            if not self._packagesReady(backend.value, backend.label(), self.onPropagate):
                return
            segmentation = self._paintedSegmentation()
            sam2 = backend is PropagationBackend.sam2
            prepared = self._worker().propagate(
                parameters.inputVolume, segmentation, self._segmentsToPropagate(), backend.value,
                parameters.device.value, axis=self._workingAxis(),
                sam2_checkpoint=self._checkpoint("sam2") if sam2 else None,
                sam2_config=parameters.sam2Model.config if sam2 else None,
            )
            if sam2:
                self.ui.sam2CheckpointPathLineEdit.addCurrentPathToHistory()
            self._startWorkerJob(prepared, segmentation)

    def onPrompt(self) -> None:
        """SAM 2 answers the prompt points / box on the slice of the view the user works in."""
        parameters = self._parameterNode
        with self._reportErrors(_("Prompt")):
            if not self._packagesReady("sam2", "SAM 2", self.onPrompt):
                return
            segmentation = self._paintedSegmentation()
            view = self._chosenSliceNode() or self.views.working_view(slicer.mrmlScene)
            prepared = self._worker().prompt(
                parameters.inputVolume, segmentation, self._segmentsToPropagate(),
                self.ui.segmentEditorWidget.currentSegmentID(), view, parameters.device.value,
                self._checkpoint("sam2"), parameters.sam2Model.config, points_node=parameters.promptPoints,
                negative_node=parameters.promptNegativePoints, roi_node=parameters.promptBox,
            )
            self.ui.sam2CheckpointPathLineEdit.addCurrentPathToHistory()
            self._startWorkerJob(prepared, segmentation)

    def _worker(self) -> interactive.InteractivePanel:
        if self._interactive is None:
            self._interactive = interactive.InteractivePanel(self.logic.pythonExecutable(), self.logic.workFolder())
        return self._interactive

    def _stopWorker(self, graceSeconds: float = 5.0) -> None:
        if self._interactive is not None:
            self._interactive.stop(graceSeconds)

    def _startWorkerJob(self, prepared: interactive.Prepared, segmentation) -> None:
        """A worker job through the one job slot; its result is one undo step of the editor."""
        volume = self._parameterNode.inputVolume
        editor = self.ui.segmentEditorWidget

        def saveStateForUndo():
            # Into the editor's history only when the editor shows this segmentation.
            if editor.segmentationNode() is segmentation:
                editor.saveStateForUndo()

        def importResult(job):
            status = prepared.import_result(saveStateForUndo)
            self._showStatus()  # the worker's device and time per slice
            return (job.restarted + ". " if job.restarted else "") + status

        # Results that arrive while the job runs: the undo state is saved before the first of them, and
        # a cancel or an error takes them back (prepared.cleanup).
        prepared.save_state_for_undo = saveStateForUndo
        self._estimate = ""
        self._startJob(prepared.job, prepared.title, importResult, prepared.cleanup, watched=(volume, segmentation))

    def _chosenSliceNode(self):
        """The view chosen under 'Painted in view', or None for Auto."""
        view = self._parameterNode.sliceView
        return None if view is SliceView.auto else controller.named_view(slicer.mrmlScene, view.value)

    def _workingAxis(self):
        """Refinement's slice axis: that of the chosen view, else of the view last worked in."""
        return controller.working_axis(self._chosenSliceNode(), self.views, slicer.mrmlScene, self._parameterNode.inputVolume)

    def onEditorSegmentChanged(self, segmentId: str) -> None:
        """The tick list follows the segment being painted, until the user ticks others themselves."""
        selector = self.ui.propagateSegmentSelector
        ticked = list(selector.selectedSegmentIDs())
        wanted = controller.follow_editor(ticked, self._editorSegment, segmentId)
        self._editorSegment = segmentId or ""
        if wanted != ticked:
            selector.setSelectedSegmentIDs(wanted)

    def _segmentsToPropagate(self) -> list[str]:
        return controller.segments_to_propagate(
            list(self.ui.propagateSegmentSelector.selectedSegmentIDs()), self.ui.segmentEditorWidget.currentSegmentID()
        )

    def onRefine(self) -> None:
        parameters = self._parameterNode
        with self._reportErrors(_("Refine with SAM")):
            if not self._packagesReady("sam", _("Refine with SAM"), self.onRefine):
                return
            fromSegment = parameters.refineSource is RefineSource.segment
            segmentation = self._paintedSegmentation() if fromSegment else self._outputSegmentation()
            segmentId = self.ui.refineSegmentSelector.currentSegmentID()
            replace = parameters.replaceRefinedSegment and fromSegment
            if replace and segmentId:
                name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
                if not slicer.util.confirmOkCancelDisplay(
                    _("Replace the voxels of segment '{name}' with the refined mask? Ctrl+Z in the editor undoes it.").format(name=name),
                    windowTitle=_("Refine with SAM"),
                ):
                    return
            # In the interactive worker: SAM and the slices' embeddings stay loaded between clicks.
            worker = self._worker()
            prepared = runs.prepare_refine(
                parameters.inputVolume, parameters.refineSource, parameters.device,
                sam_model=parameters.samModel, sam_checkpoint=self._checkpoint("sam"),
                segmentation_node=segmentation, segment_id=segmentId, roi_node=parameters.refineRoi,
                replace=replace, axis=self._workingAxis(), work_parent=self.logic.workFolder(),
                volume_file=worker.volume_file(parameters.inputVolume),
            )
            self.ui.samCheckpointPathLineEdit.addCurrentPathToHistory()
            output = self._outputSegmentation()
            nodes.require_same_transform(output, parameters.inputVolume)  # before the run, not when its result arrives
            try:
                job = worker.refine(prepared, output, parameters.inputVolume, parameters.device.value)
            except SegSSLError:
                prepared.cleanup()
                raise
            self._startWorkerJob(job, output)

    def _startImport(self, prepared: runs.PreparedRun) -> None:
        """Run a prepared command; on success its result becomes new segments of the output (one undo step)."""
        volume, segmentation = self._parameterNode.inputVolume, self._outputSegmentation()
        nodes.require_same_transform(segmentation, volume)  # before the run, not when its result arrives
        editor = self.ui.segmentEditorWidget

        def importResult(process):
            # Into the editor's history only when the editor shows this segmentation.
            undo = editor.saveStateForUndo if editor.segmentationNode() is segmentation else None
            result, status = controller.import_result(prepared, segmentation, volume, save_state_for_undo=undo)
            if result.clusters is not None:
                self._showClusters(result.clusters)
            return status

        try:
            process = prepared.process(self.logic.pythonExecutable())
        except SegSSLError:
            prepared.cleanup()
            raise
        self._estimate = ""
        if controller.runs_on_cpu(prepared.workflow, self._parameterNode.device.value, self.deviceProbe):
            self._estimate = controller.estimate_line(prepared.workflow, prepared.slices, prepared.cpu_seconds)
        self._startJob(process, prepared.title, importResult, prepared.cleanup, watched=(volume, segmentation))

    def _outputSegmentation(self):
        """The output segmentation; a new one (on the input's grid) if none is selected."""
        parameters = self._parameterNode
        if parameters.outputSegmentation is None:
            nodes.require_volume(parameters.inputVolume)
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
        """Show the cluster map (one per volume, replaced by each run) and list its clusters, largest first."""
        controller.show_label_layer(slicer.mrmlScene, clusters.node, self._parameterNode.showClusters)
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
            editor = self.ui.segmentEditorWidget
            if self._clusters.segmentation_node is editor.segmentationNode():
                editor.saveStateForUndo()
            self._clusters.add(value)
            self.ui.statusLabel.text = _("added cluster {value} as a new segment").format(value=value)

    # -- weights -----------------------------------------------------------------------------------

    def _weightsName(self, kind: str) -> str:
        parameters = self._parameterNode
        return parameters.sam2Model.value if kind == "sam2" else parameters.samModel.value

    def _pathEdit(self, kind: str):
        return self.ui.sam2CheckpointPathLineEdit if kind == "sam2" else self.ui.samCheckpointPathLineEdit

    @staticmethod
    def _chosenFile(pathEdit):
        return runs.given_file(pathEdit.currentPath)

    def _checkpoint(self, kind: str):
        """The file the user browsed to, else the downloaded weights of the chosen model."""
        return self._chosenFile(self._pathEdit(kind)) or self.weights.path(self._weightsName(kind))

    def _showStatus(self) -> None:
        """Packages, device and weights lines; look-ups that run in threads are polled by a timer."""
        if self._parameterNode is None:
            return
        self._showDependencyStatus()
        try:
            python = self.logic.pythonExecutable()
        except SegSSLError:
            python = None
        torchInstalled = not dependencies.missing(dependencies.TORCH_REQUIREMENTS)
        if torchInstalled and python:
            self.deviceProbe.ask(python)
        self.ui.deviceStatusLabel.text = controller.describe_device(self._parameterNode.device.value, self.deviceProbe, torchInstalled)
        workerLine = self._interactive.describe() if self._interactive is not None else ""
        if workerLine:
            self.ui.deviceStatusLabel.text += "\n" + workerLine
        for kind, label in (("sam2", self.ui.sam2WeightsStatusLabel), ("sam", self.ui.samWeightsStatusLabel)):
            name = self._weightsName(kind)
            chosen = self._chosenFile(self._pathEdit(kind))
            ready = not dependencies.missing_for(kind)
            if chosen is None and ready and python:
                self.weights.ask(name, python)  # `segssl weights path` needs the family's packages
            found = self.weights.found.get(name)
            if chosen is not None:
                label.text = _("using {file}").format(file=chosen.name) if chosen.is_file() else _("file not found: {file}").format(file=chosen)
            elif not ready:
                label.text = _("its Python packages are installed on first use (Download or the action button)")
            elif self.weights.checking(name):
                label.text = _("checking...")
            elif isinstance(found, Path):
                label.text = _("downloaded ({file})").format(file=found.name)
            elif found == controller.WeightsLookups.UNKNOWN:
                label.text = _("unknown: this SegSSL has no weight manager; Browse to a file")
            else:
                label.text = _("not downloaded: Download, or Browse to a file you have")
        if self.weights.pending or self.deviceProbe.pending:
            self._statusTimer.start()
        else:
            self._statusTimer.stop()

    def onDownload(self, kind: str) -> None:
        name = self._weightsName(kind)
        with self._reportErrors(_("Download")):
            if not self._packagesReady(kind, _("Download of {name}").format(name=name), lambda: self.onDownload(kind)):
                return
            if not slicer.util.confirmOkCancelDisplay(
                _("Download the '{name}' weights from their official site into SegSSL's weights folder? "
                  "The checksum is verified. Large files take a while; you can cancel.").format(name=name),
                windowTitle=_("SegSSL weights"),
            ):
                return

            def lookAgain(process):
                self.weights.forget(name)
                self._showStatus()
                return _("weights '{name}' downloaded").format(name=name)

            process = SegSSLProcess(runs.download_arguments(name), python=self.logic.pythonExecutable())
            self._estimate = ""
            self._startJob(process, _("download of {name}").format(name=name), lookAgain, kind="download")

    # -- running, progress, cancel -----------------------------------------------------------------

    def _startJob(self, process, title: str, onSuccess, cleanup=None, watched=(), kind: str = "run") -> bool:
        if not self.jobs.start(process, title, onSuccess, cleanup, watched=watched, kind=kind):
            return False  # a click that slipped through while busy: nothing nested
        self.ui.progressBar.show()
        self.ui.progressBar.setRange(0, 0)
        self.ui.statusLabel.text = _("{title}: starting...").format(title=title) + (f" {self._estimate}" if self._estimate else "")
        self._updateButtons()
        self._pollTimer.start()
        return True

    def _onPoll(self) -> None:
        if not self.jobs.busy:
            self._pollTimer.stop()
            return
        outcome = self.jobs.poll()
        if outcome is not None:
            self._showOutcome(outcome)
            return
        fraction, line = self.jobs.progress()
        if fraction is None:
            self.ui.progressBar.setRange(0, 0)  # unknown length: busy indicator
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = line + (f" — {self._estimate}" if self._estimate else "")

    def _showOutcome(self, outcome: controller.Outcome) -> None:
        self._pollTimer.stop()
        self._estimate = ""
        self.ui.progressBar.hide()
        self.ui.statusLabel.text = outcome.status
        self._updateButtons()
        if outcome.error:
            slicer.util.errorDisplay(outcome.error, windowTitle=_("SegSSL"))

    def onCancel(self) -> None:
        self.jobs.cancel()
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

    # -- packages ----------------------------------------------------------------------------------

    def _showDependencyStatus(self) -> None:
        lines = []
        for workflow, title in (("registration", _("registration")), ("s3net", "S3-Net"), ("polycl", "PolyCL"),
                                ("sam", _("Refine with SAM")), ("sam2", "SAM 2")):
            missing = dependencies.describe_missing(workflow)
            lines.append(f"{title}: " + (_("ready") if not missing else missing.replace("missing Python packages: ", _("needs "))))
        self.ui.dependencyStatusLabel.text = "; ".join(lines)
        self.ui.installDependenciesButton.visible = any(
            dependencies.missing_for(w) for w in dependencies.WORKFLOW_REQUIREMENTS
        )

    def _packagesReady(self, workflow: str, title: str, then=None) -> bool:
        """True when ``workflow``'s packages are there; else offers to install them (in the background)
        and returns False — ``then`` runs once the install has finished."""
        if not dependencies.python_supported():
            raise SegSSLError(dependencies.describe_missing(workflow))
        missing = list(dependencies.missing_for(workflow))
        if not missing:
            return True
        if self.jobs.busy:  # a click that slipped through: never a second, nested install
            return False
        if not slicer.util.confirmOkCancelDisplay(
            controller.install_confirmation(title, missing), windowTitle=_("SegSSL - install Python packages"),
            detailedText="\n".join(missing),
        ):
            return False
        self.logic.startInstall(self, missing, title, then)
        return False

    def onInstallDependencies(self) -> None:
        with self._reportErrors(_("Install dependencies")):
            missing = list(dependencies.missing(dependencies.all_requirements()))
            if missing and slicer.util.confirmOkCancelDisplay(
                controller.install_confirmation(_("Every SegSSL workflow"), missing),
                windowTitle=_("SegSSL - install Python packages"), detailedText="\n".join(missing),
            ):
                self.logic.startInstall(self, missing, _("every workflow"))


#
# SegSSLLogic
#


class SegSSLLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable from scripts: prepare with ``SegSSLSlicerLib.runs``, then
    ``run`` (blocking) — the widget starts the same processes without blocking."""

    def getParameterNode(self):
        node = super().getParameterNode()
        choices.migrate_parameters(node)  # scenes saved when labels were stored
        return SegSSLParameterNode(node)

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

    def run(self, prepared: runs.PreparedRun, segmentationNode, volumeNode, timeout=None) -> runs.RunResult:
        """Run a prepared command to its end and import the result (blocks; for scripts and tests)."""
        return runs.run_and_finish(prepared, segmentationNode, volumeNode, python=self.pythonExecutable(), timeout=timeout)

    def installSteps(self, requirements) -> list:
        constraints = Path(slicer.app.temporaryPath) / "SegSSL-constraints.txt"
        return installing.install_steps(requirements, constraints)

    def startInstall(self, widget, requirements, title: str, then=None) -> bool:
        """Install ``requirements`` in background processes through the widget's job slot (its buttons
        are disabled meanwhile; a second click cannot nest an install). Only ever on a user action."""
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and getattr(packaging, "isPipInstallInProgress", lambda: False)():
            raise SegSSLError("another module is installing Python packages — wait until it has finished, then click again")
        restartNeeded = dependencies.imported_among(requirements)
        job = installing.InstallJob(self.installSteps(requirements), self.pythonExecutable(), on_line=lambda line: logging.info("pip: %s", line))

        def installed(process):
            dependencies.refresh()
            widget.deviceProbe.reset()
            widget._stopWorker()  # the next click starts a worker that imports the new packages
            still = dependencies.missing(requirements)
            if still:
                raise SegSSLError(
                    f"pip finished but {', '.join(still)} is still missing — restart Slicer and try again; see the Python console"
                )
            if restartNeeded and slicer.util.confirmYesNoDisplay(
                _("Updated packages were already loaded ({names}). Restart Slicer now so they are used?").format(
                    names=", ".join(restartNeeded)
                ),
                windowTitle=_("SegSSL"),
            ):
                slicer.util.restart()
            if then is not None and not restartNeeded:
                qt.QTimer.singleShot(0, then)  # carry on with what the click asked for
            widget._showStatus()
            return _("packages for {title} installed").format(title=title)

        widget._estimate = ""
        return widget._startJob(job, _("installing packages for {title}").format(title=title), installed, kind="install")


#
# SegSSLTest
#


class SegSSLTest(ScriptedLoadableModuleTest):
    """The three workflows on a generated phantom (no downloads; see SegSSLSlicerLib/selftest.py), and
    the panel's own behaviour through the code paths its buttons use. unittest's assert methods, so
    that ``python -O`` cannot strip a check."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (
            self.test_segment_with_s3net,
            self.test_propagate_with_registration,
            self.test_refine_without_weights_explains_what_to_do,
            self.test_refine_with_a_tiny_random_sam,
            self.test_panel_editor_node_is_set_before_the_scene_and_exit_frees_the_views,
            self.test_panel_auto_view_is_the_slice_view_the_cursor_was_last_in,
            self.test_panel_buttons_wait_for_a_job_and_a_second_job_is_refused,
            self.test_panel_cluster_map_can_be_hidden,
            self.test_panel_propagate_reuses_one_worker_and_a_correction_updates_the_result,
        ):
            self.setUp()
            test()

    def _work(self) -> Path:
        folder = Path(slicer.app.temporaryPath) / "SegSSLTest"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def _widget(self):
        slicer.util.selectModule("SegSSL")
        return slicer.modules.segssl.widgetRepresentation().self()

    def test_segment_with_s3net(self):
        self.delayDisplay("S3-Net segmentation from a seed on a phantom")
        volume, segmentation, truth = selftest.add_phantom()
        score = selftest.check_segment(volume, segmentation, truth, SegSSLLogic.pythonExecutable(), self._work())
        self.delayDisplay(f"S3-Net liver Dice {score:.2f}")

    def test_propagate_with_registration(self):
        self.delayDisplay("Propagation of one painted slice with the registration backend")
        volume, segmentation, truth = selftest.add_phantom()
        red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
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

    def test_panel_editor_node_is_set_before_the_scene_and_exit_frees_the_views(self):
        widget = self._widget()
        editor = widget.ui.segmentEditorWidget
        self.assertEqual(editor.mrmlSegmentEditorNode().GetID(), widget.logic.segmentEditorNode().GetID())
        volume, segmentation, _truth = selftest.add_phantom()
        widget._parameterNode.inputVolume = volume
        widget._parameterNode.outputSegmentation = segmentation
        editor.setCurrentSegmentID(segmentation.GetSegmentation().AddEmptySegment("", "liver"))
        editor.setActiveEffectByName("Paint")
        self.assertIsNotNone(editor.activeEffect())
        widget.exit()
        self.assertIsNone(editor.activeEffect())
        widget.enter()

    def test_panel_auto_view_is_the_slice_view_the_cursor_was_last_in(self):
        widget = self._widget()
        volume, _segmentation, _truth = selftest.add_phantom()
        widget._parameterNode.inputVolume = volume
        widget._parameterNode.sliceView = SliceView.auto
        layout = slicer.app.layoutManager()
        layout.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        yellow = layout.sliceWidget("Yellow").mrmlSliceNode()
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        crosshair.SetCursorPositionXYZ([10.0, 10.0, 0.0], yellow)
        crosshair.SetCursorPositionInvalid()  # the mouse went to the panel
        self.assertEqual(widget._workingAxis(), nodes.view_axis(yellow, volume))

    def test_panel_buttons_wait_for_a_job_and_a_second_job_is_refused(self):
        widget = self._widget()
        volume, segmentation, _truth = selftest.add_phantom()
        widget._parameterNode.inputVolume = volume
        python = SegSSLLogic.pythonExecutable()
        sleeper = installing._StepProcess([python, "-c", "import time; time.sleep(30)"], {})
        self.assertTrue(widget._startJob(sleeper, "test job", lambda process: "done", watched=(volume, segmentation)))
        for name in widget.ACTION_BUTTONS:
            self.assertFalse(getattr(widget.ui, name).enabled, name)
        self.assertTrue(widget.ui.cancelButton.enabled)
        second = installing._StepProcess([python, "-c", "pass"], {})
        self.assertFalse(widget._startJob(second, "second job", lambda process: "done"))
        self.assertIsNone(second.pid)
        slicer.mrmlScene.RemoveNode(segmentation)  # deleted while the job runs: nothing is imported
        deadline = time.monotonic() + 20
        while widget.jobs.busy and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertFalse(widget.jobs.busy)
        self.assertIn("was removed during the run", widget.ui.statusLabel.text)
        self.assertTrue(widget.ui.segmentButton.enabled)

    def test_panel_cluster_map_can_be_hidden(self):
        widget = self._widget()
        volume, segmentation, truth = selftest.add_phantom()
        widget._parameterNode.inputVolume = volume
        clusters = nodes.add_label_volume((truth % 3).astype("uint8"), volume, "clusters", reuse_attribute=nodes.CLUSTER_MAP_ATTRIBUTE)
        widget._parameterNode.showClusters = True
        widget._showClusters(runs.ClusterMap(clusters, volume, segmentation))
        self.assertTrue(controller.label_layer_shown(slicer.mrmlScene, clusters))
        widget.ui.showClustersCheckBox.checked = False
        self.assertFalse(controller.label_layer_shown(slicer.mrmlScene, clusters))

    def _waitForJob(self, widget, seconds: float = 300) -> None:
        deadline = time.monotonic() + seconds
        while widget.jobs.busy and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertFalse(widget.jobs.busy, "the job did not end in time")

    def test_panel_propagate_reuses_one_worker_and_a_correction_updates_the_result(self):
        widget = self._widget()
        volume, segmentation, truth = selftest.add_phantom()
        widget._parameterNode.inputVolume = volume
        widget._parameterNode.outputSegmentation = segmentation
        widget._parameterNode.propagateBackend = PropagationBackend.registration
        liver = (truth == selftest.LIVER).astype("uint8")
        k = int(liver.sum(axis=(1, 2)).argmax())
        painted = liver * 0
        painted[k] = liver[k]
        source = nodes.add_segments(painted, segmentation, volume, names={1: "liver"})[1]
        widget.ui.segmentEditorWidget.setCurrentSegmentID(source)
        widget.onPropagate()
        self._waitForJob(widget)
        self.assertIn("liver propagated", widget.ui.statusLabel.text)
        pid = widget._interactive.client.pid
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 2)
        painted[k + 3] = liver[k + 3]  # a correction on another slice
        slicer.util.updateSegmentBinaryLabelmapFromArray(painted, segmentation, source, volume)
        sent = len(widget._interactive.client.sent)
        widget.onPropagate()
        self._waitForJob(widget)
        self.assertEqual(widget._interactive.client.pid, pid)
        self.assertEqual([r["op"] for r in widget._interactive.client.sent[sent:]], ["annotate", "propagate", "save"])
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 2)  # updated, not added
        slicer.mrmlScene.Clear()  # the scene closes: the worker goes with it
        self.assertFalse(widget._interactive.client.alive)
