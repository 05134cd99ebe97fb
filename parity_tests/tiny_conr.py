"""A small CoNR for the tests whose point is the export, the cache or a runner's plumbing (never the official
numbers). Imports Paddle only, so a child process that needs it starts without torch."""
from __future__ import annotations

import paddle

from conr_common.contract.config import CoNRConfig, DecoderConfig, ShaderConfig, UNetConfig


def tiny_config() -> CoNRConfig:
    """A CoNR of the official shape with small networks (ResNet-18 parser, narrow shader and decoder: 26 M parameters
    instead of 180 M, a 100 MB export at 128 px instead of 720 MB), for tests whose point is the export, the cache or
    the runner's plumbing, never the official numbers: every layer kind and every shader level is still there."""
    filters = (64, 48, 32, 16, 8)
    resnet18 = (512, 256, 128, 64, 64)  # its skip channels, deepest first: what the shader reads at each level
    return CoNRConfig(
        parser=UNetConfig(depth=18, in_channels=3, classes=4, stem_pool="conv", decoder_filters=filters),
        pose_encoder=UNetConfig(depth=18, in_channels=4, classes=1, stem_pool="max", decoder_filters=filters),
        shader=ShaderConfig(target_feature_channels=resnet18, feature_channels=resnet18,
                            out_messages=(64, 64, 32, 32, 16, 16), out_locals=(64, 64, 32, 32, 16, 0),
                            block_width=(32,) * 6),
        decoder=DecoderConfig(channels=16),
    )


def tiny_paddle_model(seed: int = 0) -> paddle.nn.Layer:
    """A Paddle CoNR of `tiny_config()`, its parameters drawn under `paddle.seed(seed)` (eval mode)."""
    from conr_paddle.model import CoNR

    paddle.seed(seed)
    return CoNR(tiny_config())


def tiny_pair(seed: int = 0) -> tuple:
    """(torch reference, Paddle port) of `tiny_config()` holding the same weights: the torch side drawn under
    `torch.manual_seed(seed)`, moved through the converter's rename rules (`conr_common.contract.rename`, the
    official names' rules; the manifest's shapes are the official ones, so its strict check is not used here)."""
    import torch

    from conr_common.contract.config import NETWORK_NAMES
    from conr_common.contract.rename import to_paddle_tensor, torch_to_paddle_key
    from conr_paddle.model import CoNR, load_networks
    from conr_torch_ref.model import CoNR as TorchCoNR

    torch.manual_seed(seed)
    tm = TorchCoNR(tiny_config()).eval()
    states = {}
    for name in NETWORK_NAMES:
        state = {k: v.detach().numpy() for k, v in getattr(tm, name).state_dict().items()}
        states[name] = {torch_to_paddle_key(k, v.shape): to_paddle_tensor(k, v) for k, v in state.items()}
    return tm, load_networks(CoNR(tiny_config()), states)
