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
    """The seeded official checkpoints as numpy dicts (torch names), read back by the production reader
    (`conr_common.checkpoints`: torch.load with weights_only=True)."""
    from conr_common.checkpoints import load_folder

    return load_folder(weights_dir, "torch")


@pytest.fixture(scope="session")
def paddle_states(official_states):
    """The same tensors under Paddle names, through the converter's strict mapping (`conr_common.manifest`)."""
    from conr_common.manifest import torch_to_paddle

    return {n: torch_to_paddle(n, s) for n, s in official_states.items()}


@pytest.fixture(scope="session")
def torch_model(official_states):
    from conr_torch_ref.model import CoNR, strict_load

    model = CoNR()
    for name, state in official_states.items():
        strict_load(getattr(model, name), state, what=name)
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
    """The seeded weights converted to `<network>.pdparams` by the converter's library function (what
    `python -m convert torch2paddle` runs); a converter failure fails the tests that need it."""
    from conr_common import conversion

    out = tmp_path_factory.mktemp("pdparams")
    conversion.convert_checkpoints("torch2paddle", weights_dir, out, force=True)
    return out
