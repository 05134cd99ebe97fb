"""Session fixtures: the seeded official-format weight set is built once per test session (180 M parameters).

Both frameworks live in one process, both in eval mode, fed the same numpy inputs.
"""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """Seeded random weights saved exactly like the official files (torch.save of each state_dict)."""
    from conr_torch_ref.seeded import write_seeded_weights

    return write_seeded_weights(tmp_path_factory.mktemp("official_weights"))


@pytest.fixture(scope="session")
def official_states(weights_dir):
    """The seeded official checkpoints as numpy dicts (torch names), read back with weights_only=True."""
    import torch

    from conr_common.config import NETWORK_NAMES
    from conr_common.manifest import official_manifest

    out = {}
    for name in NETWORK_NAMES:
        state = torch.load(weights_dir / official_manifest()[name].file, map_location="cpu", weights_only=True)
        out[name] = {k: v.numpy() for k, v in state.items()}
    return out


@pytest.fixture(scope="session")
def paddle_states(official_states):
    """The same tensors under Paddle names, through the converter's rename table."""
    from convert.rename import torch_to_paddle_key

    return {n: {torch_to_paddle_key(k, v.shape): v for k, v in s.items()} for n, s in official_states.items()}


@pytest.fixture(scope="session")
def torch_model(official_states):
    import torch

    from conr_torch_ref.model import CoNR

    model = CoNR()
    for name, state in official_states.items():
        getattr(model, name).load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def paddle_model(paddle_states):
    from conr_paddle.model import CoNR, load_networks

    return load_networks(CoNR(), paddle_states)


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    """The procedural sample character and a short UDP sequence (256 px sources, cropped per test size)."""
    from conr_common.samples import ensure_samples

    return ensure_samples(tmp_path_factory.mktemp("samples"), size=256, frames=4, seed=0)


@pytest.fixture()
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def pdparams_dir(weights_dir, tmp_path_factory):
    """The seeded weights converted to `<network>.pdparams` by the converter CLI (or, if the converter fails
    for reasons of its own, saved directly from the renamed state dicts so these tests still run)."""
    from conr_common.config import NETWORK_NAMES

    out = tmp_path_factory.mktemp("pdparams")
    try:
        from convert.cli import main as convert_main

        status = convert_main(["torch2paddle", str(weights_dir), "-o", str(out), "--force"])
    except ImportError:
        status = None
    if status != 0 or not all((out / f"{n}.pdparams").is_file() for n in NETWORK_NAMES):
        import paddle
        import torch

        from convert.rename import torch_to_paddle_key

        for name in NETWORK_NAMES:
            state = torch.load(weights_dir / f"{name}.pth", map_location="cpu", weights_only=True)
            paddle.save({torch_to_paddle_key(k, v.shape): v.numpy() for k, v in state.items()},
                        str(out / f"{name}.pdparams"))
    return out
