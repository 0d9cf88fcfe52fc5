"""SAM box refinement, SAM 2 one-slice propagation, a registration fallback and weight management.

Modules: ``weights`` (registry of known checkpoints, cache folder), ``download`` (resumable, checked
downloads), ``models`` (building SAM / SAM 2 from checkpoint files), ``annotation`` (which slices
the user drew on), ``frames`` (windowed slices as SAM / SAM 2 inputs), ``refine`` (SAM box
refinement), ``sam2_propagation`` and ``registration_propagation`` (one slice -> whole volume),
``demo_step``.
"""
