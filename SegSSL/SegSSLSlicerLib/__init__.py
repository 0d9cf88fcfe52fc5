"""The SegSSL panel's code that works on MRML nodes without Qt.

Everything here needs only ``slicer-core`` (MRML scene, volumes and segmentations logic,
``slicer.util``), so pytest covers it outside the Slicer application. ``SegSSL.py`` is the thin
Qt layer on top. It lives in a package (not as loose ``.py`` files next to ``SegSSL.py``) because
Slicer takes every ``.py`` file in a scripted-module folder for a module of its own.
"""
