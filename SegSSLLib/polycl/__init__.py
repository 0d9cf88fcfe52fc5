"""PolyCL: contrastive pretraining with example selection, then fine-tuning with few labels.

Modules: ``model`` (2D U-Net + projection head), ``selection`` (S/O/M pairs), ``positional`` (P pairs),
``augment`` (per-sample views), ``diagnostics`` (did pretraining learn anything), ``losses`` (InfoNCE),
``slice_cache`` (volumes sliced once, memory-mapped), ``datasets`` (torch datasets and splits),
``pretraining`` and ``finetuning`` (training loops), ``transfer`` (pretrained-layer learning rates,
unfreezing), ``workflows`` (the API's ``pretrain`` and ``finetune``), ``distributed`` (torchrun/DDP
helpers), ``segment`` (the API's ``segment_polycl``), ``inference`` (volume in, label map out) and
``demo_step``.

Nothing heavy is imported here, so ``segssl --help`` stays fast.
"""
