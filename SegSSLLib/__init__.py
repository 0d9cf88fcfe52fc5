"""SegSSL: label-efficient medical image segmentation (S3-Net, PolyCL, SAM, SAM 2).

The library never imports `slicer`; the 3D Slicer module in ``SegSSL/`` is a thin layer over it.
"""

__version__ = "0.1.0"
