"""S3-Net: label-free segmentation of one image (or volume) by a network trained on that image.

Modules: ``attention`` (I-LKA blocks), ``deformable`` (deformable convolution with predicted
offsets), ``network`` (the S3-Net), ``affine`` (random affine transforms), ``losses`` (the three
terms), ``training`` (training loop and inference), ``clustering`` (image on disk → cluster map),
``selection`` (seeds → structure) and ``demo_step``. See docs/s3net.md.
"""
