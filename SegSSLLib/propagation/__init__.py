"""Annotated slices carried through the whole volume, in one batch run or interactively.

Modules: ``annotation`` (which slices the user drew on), ``rules`` (checks that keep a propagated
structure plausible: tissue model, taper watch, fit to the structure), ``base`` (the ``Propagator``
interface), ``propagate`` (the backends by name, the one-call ``propagate``), ``sam2`` (SAM 2 video
propagation), ``registration`` (a fallback by slice-to-slice registration; needs no torch),
``session`` (the interactive session: prompts per slice, corrections that reuse work, undo) with its
per-slice image-feature cache (``feature_cache``), and ``demo_step``.
"""
