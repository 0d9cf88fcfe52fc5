"""Model weights: the registry of known checkpoints, downloads, and building SAM / SAM 2 from files.

Modules: ``registry`` (known checkpoints, cache folder; no torch), ``download`` (resumable, checked
downloads) and ``models`` (SAM and SAM 2 predictors from checkpoint files).
"""
