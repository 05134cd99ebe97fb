"""PaddlePaddle port of CoNR, file for file beside `conr_torch_ref`, plus the renderer users run.

Lin et al., "Collaborative Neural Rendering using Anime Character Sheets", arXiv:2207.05378;
behaviour follows the official PyTorch code megvii-research/CoNR @ 660c4f7 (MIT).
Parameter names equal the official checkpoint keys except InstanceNorm `weight` -> `scale` and PReLU
`weight` -> `_weight` (see conr_common.contract.rename).
"""
