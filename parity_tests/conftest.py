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
def torch_model(weights_dir):
    """The torch reference, built once per session and loaded by the production loader (strict, weights_only)."""
    from conr_torch_ref.model import CoNR, load_official

    return load_official(CoNR(), weights_dir).eval()


@pytest.fixture(scope="session")
def paddle_model(pdparams_dir):
    """The Paddle port, built once per session and loaded by the production loader (strict, restricted unpickler)
    from the converter's output: every parity test runs on weights that went through the converter."""
    from conr_paddle.model import CoNR, load_pdparams

    return load_pdparams(CoNR(), pdparams_dir)


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
    `python -m convert torch2paddle` runs). No fallback: a converter failure fails every test that needs these
    files, loudly."""
    from conr_common import conversion
    from conr_common.config import NETWORK_NAMES

    out = tmp_path_factory.mktemp("pdparams")
    conversion.convert_checkpoints("torch2paddle", weights_dir, out, force=True)
    missing = [n for n in NETWORK_NAMES if not (out / f"{n}.pdparams").is_file()]
    assert not missing, f"the converter returned but wrote no .pdparams for {missing}"
    return out


@pytest.fixture(scope="session")
def custom_ops(tmp_path_factory):
    """The compiled operators (conr_paddle.ext), built once per session into a session cache folder.

    Where no C++ compiler exists, the tests that need them skip with the package's own reason: that is the
    documented fallback (the exporter keeps grid_sample), tested by test_custom_ops.py's simulated "no compiler"
    cases. With a compiler present, a failed build is a failure."""
    from conr_paddle.ext import find_cxx_compiler, load_warp_op

    op = load_warp_op(tmp_path_factory.mktemp("conr_ops_cache"))
    if not op.available:
        if find_cxx_compiler() is None:
            pytest.skip(f"custom operators cannot be built here (the predictor falls back to grid_sample): {op.reason}")
        pytest.fail(f"a C++ compiler is installed but the custom operators did not build: {op.reason}")
    return op
