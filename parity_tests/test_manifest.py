"""The reference and the port have exactly the official checkpoint layout (conr_common/contract/official_manifest.json)."""
from __future__ import annotations

import numpy as np
import pytest

from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError
from conr_common.contract.manifest import official_manifest


@pytest.fixture(scope="module")
def torch_nets():
    """The reference's networks declared on torch's meta device: names, shapes and dtypes without 180 M values."""
    import torch

    from conr_torch_ref.model import build_networks

    with torch.device("meta"):
        return build_networks()


@pytest.fixture(scope="module")
def paddle_nets():
    """The port's networks declared under `paddle.LazyGuard`: names, shapes and dtypes without 180 M values."""
    import paddle

    from conr_paddle.model import build_networks

    with paddle.LazyGuard():
        return build_networks()


def test_manifest_covers_four_networks():
    man = official_manifest()
    assert list(man) == list(NETWORK_NAMES)
    assert [m.file for m in man.values()] == [f"{n}.pth" for n in NETWORK_NAMES]
    assert sum(m.num_parameters for m in man.values()) == 180_403_745


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_torch_reference_state_dict_equals_manifest(torch_nets, name):
    spec = official_manifest()[name]
    state = torch_nets[name].state_dict()
    assert list(state) == list(spec.tensors), "keys (and their order) differ from the official state_dict"
    for key, t in state.items():
        assert tuple(t.shape) == spec.tensors[key].shape, key
        assert str(t.dtype).replace("torch.", "") == spec.tensors[key].dtype, key
    assert sum(t.numel() for t in state.values()) == spec.num_parameters


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_paddle_names_are_official_after_rename(paddle_nets, name):
    from conr_common.contract.rename import paddle_to_torch_key

    spec = official_manifest()[name]
    state = paddle_nets[name].state_dict()
    renamed = {paddle_to_torch_key(k): tuple(v.shape) for k, v in state.items()}
    assert list(renamed) == list(spec.tensors)
    assert renamed == {k: v.shape for k, v in spec.tensors.items()}
    # nothing but norm scales and PReLU slopes needs renaming
    changed = {k for k in state if paddle_to_torch_key(k) != k}
    assert all(k.endswith(".norm.scale") or k.endswith("._weight") for k in changed)
    assert bool(changed) == (name != "rgbadecodernet")  # the decoder has neither norms nor PReLUs


def test_seeded_files_match_manifest(official_states):
    for name, state in official_states.items():
        spec = official_manifest()[name]
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in spec.tensors.items()}
        assert all(v.dtype == np.float32 for v in state.values())
    # the seeded norms and PReLUs are not left at their defaults, so a swapped parameter shows in parity tests
    norm = official_states["udpparsernet"]["backbone.1.norm.weight"]
    prelu = official_states["shader"]["decoder_blocks.0.conv0.1.weight"]
    assert norm.std() > 0.05 and prelu.std() > 0.01


def test_paddle_loads_seeded_weights_strictly(paddle_model, paddle_states):
    got = paddle_model.shader.state_dict()["decoder_blocks.0.conv0.1._weight"].numpy()
    assert np.array_equal(got, paddle_states["shader"]["decoder_blocks.0.conv0.1._weight"])


def test_strict_loader_names_every_problem(paddle_states):
    from conr_paddle.model import build_network, strict_load

    state = dict(paddle_states["rgbadecodernet"])
    state.pop("conv_rgba.0.bias")
    state["bottleneck.r0.extra.weight"] = np.zeros(3, np.float32)
    state["bottleneck.r0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    net = build_network("rgbadecodernet")  # values to compare after the refused load: built, not declared
    before = net.state_dict()["conv_rgba.0.weight"].numpy().copy()
    with pytest.raises(ConrInputError) as err:
        strict_load(net, state, what="rgbadecodernet.pdparams")
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in ("rgbadecodernet.pdparams", "missing key(s): conv_rgba.0.bias",
                     "unexpected key(s): bottleneck.r0.extra.weight", "bottleneck.r0.conv1.weight: file [64, 64, 1, 1]"):
        assert fragment in msg
    # nothing was assigned before the check failed
    assert np.array_equal(net.state_dict()["conv_rgba.0.weight"].numpy(), before)
