"""Propagation of slice annotations through a volume: the interactive session (``session``) and its
per-slice image-feature cache (``feature_cache``).

The batch propagation backends (SAM 2, registration) still live in ``SegSSLLib.sam``; the library
re-layout moves them here.
"""
