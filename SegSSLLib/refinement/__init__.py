"""SAM box refinement of coarse label maps.

Modules: ``sam_refine`` (a box and points per component, slice by slice, through a SAM predictor) and
``medsam`` (MedSAM's own input preparation around a SAM predictor).
"""
