"""One annotated slice carried through the whole volume.

Modules: ``annotation`` (which slices the user drew on), ``rules`` (checks that keep a propagated
structure plausible: tissue model, taper watch, fit to the structure), ``sam2`` (SAM 2 video
propagation), ``registration`` (a fallback by slice-to-slice registration; needs no torch) and
``demo_step``.
"""
