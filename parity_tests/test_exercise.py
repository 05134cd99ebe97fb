"""portcheck.exercise.exercise_norms: every normalisation layer of a freshly built network gets drawn statistics
and affine parameters (so eval-mode BatchNorm is no longer the identity), deterministically in the seed, and
nothing else is touched."""
from __future__ import annotations

import numpy as np
import torch

from parity_tests.zoo import ZOO_BY_NAME, construct, image_batch
from portcheck.exercise import exercise_norms

NORM_TYPES = (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)


def _fresh_resnet():
    torch.manual_seed(0)
    return construct(ZOO_BY_NAME["resnet18"].torch_callable, {})


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_every_batchnorm_changes_and_nothing_else():
    model = _fresh_resnet()
    before = _state(model)
    changed = exercise_norms(model, seed=3)
    norms = [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert changed == norms and len(norms) == 20
    after = _state(model)
    for key, value in after.items():
        owner, _, local = key.rpartition(".")
        moved = not np.array_equal(value, before[key])
        assert moved == (owner in norms and local != "num_batches_tracked"), key
    for name in norms:  # the documented ranges
        assert np.all((after[f"{name}.running_var"] >= 0.5) & (after[f"{name}.running_var"] <= 1.5))
        assert np.all(np.abs(after[f"{name}.weight"] - 1.0) <= 0.1)


def test_same_seed_same_draws_other_seed_other_draws():
    first, second, other = _fresh_resnet(), _fresh_resnet(), _fresh_resnet()
    exercise_norms(first, seed=5)
    exercise_norms(second, seed=5)
    exercise_norms(other, seed=6)
    a, b, c = _state(first), _state(second), _state(other)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["layer4.1.bn2.running_mean"], c["layer4.1.bn2.running_mean"])


def test_eval_batchnorm_is_no_longer_the_identity_and_group_layer_norms_move():
    # fresh BatchNorm in eval mode: y = x / sqrt(1 + eps); exercised: a different affine map per channel
    bn = torch.nn.BatchNorm2d(4).eval()
    x = torch.from_numpy(image_batch(8, 1, seed=0)[:, :3].repeat(2, axis=1)[:, :4])
    assert torch.allclose(bn(x), x, atol=1e-4)
    exercise_norms(bn, seed=0)
    assert not torch.allclose(bn(x), x, atol=1e-2)
    net = torch.nn.Sequential(torch.nn.GroupNorm(2, 4), torch.nn.LayerNorm(8), torch.nn.LayerNorm(8, bias=False))
    assert exercise_norms(net, seed=0) == ["0", "1", "2"]
    assert not torch.equal(net[0].bias, torch.zeros(4)) and not torch.equal(net[2].weight, torch.ones(8))
