"""Static checks of the Slicer module's files: the panel's widgets, the parameter node bindings and the
CMake lists that decide what a built extension contains (a file missing there is missing in Slicer)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "SegSSL"
UI_FILE = MODULE / "Resources" / "UI" / "SegSSL.ui"
WIDGET_NAME = re.compile(r"^[a-z][A-Za-z0-9]*(Button|Label|Selector|Widget|ComboBox|CheckBox|LineEdit|Bar)$")


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def module_tree() -> ast.Module:
    return ast.parse((MODULE / "SegSSL.py").read_text())


def names_used_by_the_widget_code() -> set[str]:
    """``self.ui.X`` attributes, and widget-like names given as strings (``getattr(self.ui, name)``)."""
    used = set()
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            used.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and WIDGET_NAME.match(node.value):
            used.add(node.value)
    return used


def test_every_widget_the_code_names_exists_in_the_ui_file():
    used = names_used_by_the_widget_code()
    assert {"segmentButton", "propagateButton", "refineButton", "cancelButton", "progressBar", "statusLabel"} <= used
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"SegSSL.py uses widgets that SegSSL.ui does not define: {missing}"


def test_parameter_bindings_match_the_parameter_node_and_widget_classes_are_declared():
    tree = module_tree()
    wrapper = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "SegSSLParameterNode")
    fields = {s.target.id for s in wrapper.body if isinstance(s, ast.AnnAssign)}
    bound = {}
    for name, element in ui_widgets().items():
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound.setdefault(prop.find("string").text, []).append(name)
    assert set(bound) == fields, f"unbound fields {fields - set(bound)}, unknown bindings {set(bound) - fields}"
    assert all(len(widgets) == 1 for widgets in bound.values()), bound

    root = ET.parse(UI_FILE).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used_classes = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used_classes if not c.startswith("Q")} <= declared
    # Every MRML widget gets the scene from the top-level widget.
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {n for n, w in ui_widgets().items() if w.get("class", "").startswith(("qMRML", "qSlicer")) and n != "SegSSL"}
    assert mrml <= receivers, mrml - receivers


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\b(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return [line.split("#")[0].strip() for line in match.group(1).splitlines() if line.split("#")[0].strip()]


def test_cmake_lists_package_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    module_scripts = {s.replace("${MODULE_NAME}", "SegSSL") for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")}
    library_scripts = set(cmake_list(text, "SEGSSLLIB_PYTHON_SCRIPTS"))
    library_resources = set(cmake_list(text, "SEGSSLLIB_PYTHON_RESOURCES"))
    resources = {s.replace("${MODULE_NAME}", "SegSSL") for s in cmake_list(text, "MODULE_PYTHON_RESOURCES")}

    on_disk_module = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "Testing" not in p.parts}
    on_disk_library = {p.relative_to(REPO).as_posix() for p in (REPO / "SegSSLLib").rglob("*.py")}
    on_disk_resources = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert module_scripts == on_disk_module, f"add to / remove from MODULE_PYTHON_SCRIPTS: {on_disk_module ^ module_scripts}"
    assert library_scripts == on_disk_library, f"add to / remove from SEGSSLLIB_PYTHON_SCRIPTS: {on_disk_library ^ library_scripts}"
    library_data = {p.relative_to(REPO).as_posix() for p in (REPO / "SegSSLLib").rglob("*.json")}
    assert library_resources == library_data, f"add to / remove from SEGSSLLIB_PYTHON_RESOURCES: {library_data ^ library_resources}"
    assert resources == on_disk_resources, f"add to / remove from MODULE_PYTHON_RESOURCES: {on_disk_resources ^ resources}"
    # SegSSLLib is packaged from the repository root, so it lands next to SegSSL.py as a package.
    assert re.search(r"ctkMacroCompilePythonScript\(.*SOURCE_DIR \$\{PROJECT_SOURCE_DIR\}", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_has_the_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    for required in [
        "EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
        "add_subdirectory(SegSSL)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})",
    ]:
        assert required in text, required
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', text)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert (REPO / "Resources" / "SegSSL.png").is_file()


# Stand-ins for the Slicer/CTK macros with their argument checks, so cmake can run SegSSL/CMakeLists.txt
# in script mode and fail, like a Slicer build would, on a listed file that does not exist.
_MACRO_STANDINS = """
function(_require_files base)
  foreach(file ${ARGN})
    if(NOT EXISTS "${base}/${file}")
      message(FATAL_ERROR "listed file does not exist: ${base}/${file}")
    endif()
  endforeach()
endfunction()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS OR NOT MY_NAME)
    message(FATAL_ERROR "bad slicerMacroBuildScriptedModule arguments: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  _require_files("${CMAKE_CURRENT_SOURCE_DIR}" ${MY_SCRIPTS} ${MY_RESOURCES})
  message(STATUS "scripted module ${MY_NAME}")
endmacro()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS OR NOT MY_TARGET_NAME OR NOT MY_DESTINATION_DIR OR NOT MY_INSTALL_DIR)
    message(FATAL_ERROR "bad ctkMacroCompilePythonScript arguments: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  _require_files("${MY_SOURCE_DIR}" ${MY_SCRIPTS} ${MY_RESOURCES})
  message(STATUS "python package files ${MY_TARGET_NAME}")
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  _require_files("${CMAKE_CURRENT_SOURCE_DIR}" ${MY_SCRIPT})
  message(STATUS "module test ${MY_SCRIPT}")
endmacro()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_files_parse_and_list_existing_files(tmp_path):
    # The extension file needs a Slicer build to run: check that cmake parses it.
    top = tmp_path / "top.cmake"
    top.write_text("if(FALSE)\n" + (REPO / "CMakeLists.txt").read_text() + "\nendif()\n")
    result = subprocess.run(["cmake", "-P", str(top)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    # The module file runs for real against the stand-ins (script mode: the current folder is the source folder).
    module = tmp_path / "module.cmake"
    module.write_text(
        _MACRO_STANDINS
        + f'set(PROJECT_SOURCE_DIR "{REPO.as_posix()}")\nset(BUILD_TESTING ON)\n'
        + 'set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/qt-scripted-modules")\n'
        + 'set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/qt-scripted-modules")\n'
        + f'include("{(MODULE / "CMakeLists.txt").as_posix()}")\n'
    )
    result = subprocess.run(["cmake", "-P", str(module)], capture_output=True, text=True, cwd=MODULE)
    assert result.returncode == 0, result.stderr
    assert "scripted module SegSSL" in result.stdout and "python package files SegSSLLib" in result.stdout
    assert "module test SegSSL.py" in result.stdout


def test_the_panel_installs_what_the_library_declares():
    """Slicer installs packages from its own list; it must match pyproject.toml (a missing one fails at run time)."""
    tomllib = pytest.importorskip("tomllib")
    import sys

    sys.path.insert(0, str(MODULE))
    from SegSSLSlicerLib import dependencies

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    from_slicer = set(dependencies.KEEP_INSTALLED)  # Slicer ships these; never replaced
    declared = {r.replace(" ", "") for r in declared if r.split(">")[0] not in from_slicer}
    panel = set(dependencies.TORCH_REQUIREMENTS + dependencies.PIP_REQUIREMENTS)
    assert panel == declared
