"""One optimizer, two frameworks: a framework-neutral spec that builds `torch.optim` and `paddle.optimizer` with
every argument spelled out, and the mapping between their conventions written down and checked.

The mapping (measured with torch 2.13 and paddlepaddle 3.3.1, CPU; parity_tests/test_training.py checks it):

- **SGD with momentum** -> `paddle.optimizer.Momentum` (Paddle's `SGD` has no momentum). Both keep a velocity
  v = mu v + g and step p -= lr v; torch's first step sets v = g, Paddle's velocity starts at 0, which is the same.
  `nesterov=True` -> `use_nesterov=True` (both step with g + mu v). torch's `dampening` (v = mu v + (1 - d) g after
  the first step) has no Paddle counterpart: only `dampening=0` maps; any other value is refused.
- **SGD without momentum** -> `paddle.optimizer.SGD`.
- **Coupled weight decay** (torch SGD/Adam `weight_decay`: g += wd p before anything else) -> Paddle's
  `weight_decay=<float>`, an L2Decay regulariser: the same g += wd p. Momentum fuses it into its kernel.
- **float32 hyper-parameters**: Paddle's Momentum kernel takes `mu` and the L2 coefficient as float32 attributes,
  and AdamW's kernel its `coeff`, even when the parameters are float64: Paddle computes with float32(mu),
  float32(wd). `paddle_effective(spec)` is the spec as Paddle computes it; a float64 run of torch with it agrees with
  Paddle's float64 run to float64 rounding (1e-16 on small pairs), while the exact spec differs by about
  |x - float32(x)| / x ~ 1e-8 relative in the update (momentum 0.9: 1.6e-8 after 3 steps). Adam's betas, epsilon
  and learning rate and SGD's learning rate are used in float64.
- **Adam epsilon**: torch divides by sqrt(v_hat) + eps; Paddle's kernel folds the bias corrections into the step
  size, lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), and divides by sqrt(v) + eps sqrt(1 - b2^t): algebraically the same
  update (checked with eps = 0.1, where a misplaced epsilon would show: float64 runs agree to 1e-16). Both apply
  bias correction; neither can turn it off.
- **AdamW** (decoupled decay: p -= lr wd p, then the Adam step) -> `paddle.optimizer.AdamW(weight_decay=wd)`, whose
  kernel does p -= lr lr_ratio coeff p first: `lr_ratio=None` (1 for every parameter) and
  `apply_decay_param_fun=None` (decay every parameter, as torch's single parameter group does).
- **float32 bias correction**: in a float32 run Paddle's Adam/AdamW keep beta1^t and beta2^t as float32
  accumulators and form 1 - beta2^t in float32, where torch forms it in float64: a cancellation of relative size up
  to 2^-24 / (1 - beta2) (6e-5 for beta2 = 0.999) in the step size, fading as t grows. Measured on a Linear pair:
  Paddle's float32 update 3.9e-6 (scaled) from the float64 truth after 3 steps, 2.0e-6 after 20, torch's 9.3e-7.
  `fp32_allowance(spec)` is that bound; the step comparison adds it to the precision floor (0 for SGD).
- **amsgrad**: both frameworks have it (`amsgrad=`); only `False` is mapped and tested here.
- Left at their neutral values on purpose: torch `maximize=False`, `foreach=False`, `fused=False`,
  `differentiable=False`, `capturable=False`; Paddle `grad_clip=None`, `multi_precision=False`, `lazy_mode=False`,
  `use_multi_tensor=False`, `rescale_grad=1.0`, `use_lowprecision_moment=False`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from portcheck.errors import PortInputError

__all__ = ["KINDS", "OptimizerSpec", "torch_optimizer", "paddle_optimizer", "paddle_effective", "fp32_allowance", "torch_settings",
           "paddle_settings", "settings_rows", "mapping_rows"]

KINDS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer's hyper-parameters in torch's terms (`kind` sgd | adam | adamw). momentum, dampening and
    nesterov are SGD's; betas, eps and amsgrad Adam's and AdamW's; weight_decay is coupled (L2, added to the
    gradient) for sgd and adam, decoupled for adamw."""

    kind: str
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PortInputError(f"optimizer kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("lr", "momentum", "dampening", "weight_decay", "eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise PortInputError(f"optimizer {name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise PortInputError(f"optimizer lr must be > 0, got {self.lr!r}")
        if not all(0.0 <= b < 1.0 for b in self.betas) or len(self.betas) != 2:
            raise PortInputError(f"optimizer betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.kind == "sgd" and self.dampening != 0.0:
            raise PortInputError("optimizer dampening: Paddle's Momentum has no dampening (torch: v = mu v + "
                                 f"(1 - d) g), so only dampening 0 maps exactly; got {self.dampening!r}")
        if self.nesterov and (self.kind != "sgd" or self.momentum == 0.0):
            raise PortInputError("optimizer nesterov needs kind sgd with momentum > 0")
        if self.amsgrad:
            raise PortInputError("optimizer amsgrad: only amsgrad=False is mapped and tested")
        if self.kind != "sgd" and self.momentum != 0.0:
            raise PortInputError(f"optimizer momentum is SGD's; {self.kind} uses betas")


def _f32(x: float) -> float:
    return float(np.float32(x))


def paddle_effective(spec: OptimizerSpec) -> OptimizerSpec:
    """The spec as Paddle's kernels compute it: Momentum's mu and L2 coefficient, and AdamW's coeff, rounded to
    float32 (kernel attributes), whatever the parameters' dtype. A float64 torch run with it is Paddle's float64
    run to float64 rounding."""
    if spec.kind == "sgd" and spec.momentum > 0:
        return replace(spec, momentum=_f32(spec.momentum), weight_decay=_f32(spec.weight_decay))
    if spec.kind == "adamw":
        return replace(spec, weight_decay=_f32(spec.weight_decay))
    return spec


def fp32_allowance(spec: OptimizerSpec) -> float:
    """The extra float32 error Paddle's kernel is expected to carry in a step (scaled): 2^-24 / (1 - beta2) for
    Adam/AdamW (its float32 bias correction, module docstring), 0 for SGD."""
    return 0.0 if spec.kind == "sgd" else float(2.0 ** -24 / (1.0 - spec.betas[1]))


def torch_optimizer(spec: OptimizerSpec, params):
    """The torch.optim optimizer of `spec` over `params`, every argument spelled out."""
    import torch

    common = {"foreach": False, "maximize": False, "differentiable": False, "fused": False}
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, dampening=spec.dampening,
                               weight_decay=spec.weight_decay, nesterov=spec.nesterov, **common)
    adam = {"lr": spec.lr, "betas": tuple(spec.betas), "eps": spec.eps, "weight_decay": spec.weight_decay,
            "amsgrad": spec.amsgrad, "capturable": False, **common}
    if spec.kind == "adam":
        return torch.optim.Adam(params, decoupled_weight_decay=False, **adam)
    return torch.optim.AdamW(params, **adam)


def paddle_optimizer(spec: OptimizerSpec, parameters):
    """The paddle.optimizer equivalent of `spec` over `parameters`, every argument spelled out (module docstring)."""
    import paddle

    wd = float(spec.weight_decay) if spec.weight_decay else None  # a float is an L2Decay regulariser (coupled)
    if spec.kind == "sgd" and spec.momentum == 0.0:
        return paddle.optimizer.SGD(learning_rate=spec.lr, parameters=parameters, weight_decay=wd, grad_clip=None,
                                    multi_precision=False)
    if spec.kind == "sgd":
        return paddle.optimizer.Momentum(learning_rate=spec.lr, momentum=spec.momentum, parameters=parameters,
                                         use_nesterov=spec.nesterov, weight_decay=wd, grad_clip=None,
                                         multi_precision=False, rescale_grad=1.0, use_multi_tensor=False)
    adam = {"learning_rate": spec.lr, "beta1": spec.betas[0], "beta2": spec.betas[1], "epsilon": spec.eps,
            "parameters": parameters, "grad_clip": None, "lazy_mode": False, "multi_precision": False,
            "amsgrad": spec.amsgrad}
    if spec.kind == "adam":
        return paddle.optimizer.Adam(weight_decay=wd, use_multi_tensor=False, **adam)
    return paddle.optimizer.AdamW(weight_decay=float(spec.weight_decay), lr_ratio=None, apply_decay_param_fun=None,
                                  use_lowprecision_moment=False, **adam)


def torch_settings(opt) -> dict:
    """What a built torch optimizer will do, in the spec's terms (read back from its first parameter group)."""
    g = opt.param_groups[0]
    kind = {"SGD": "sgd", "Adam": "adamw" if g.get("decoupled_weight_decay") else "adam", "AdamW": "adamw"}
    out = {"kind": kind.get(type(opt).__name__, type(opt).__name__), "lr": float(g["lr"]),
           "weight_decay": float(g["weight_decay"])}
    if out["kind"] == "sgd":
        out.update(momentum=float(g["momentum"]), dampening=float(g["dampening"]), nesterov=bool(g["nesterov"]))
    else:
        out.update(beta1=float(g["betas"][0]), beta2=float(g["betas"][1]), eps=float(g["eps"]),
                   amsgrad=bool(g["amsgrad"]))
    return out


def _paddle_weight_decay(opt) -> float:
    """The coupled L2 coefficient of a Paddle optimizer (0 without one); a regulariser of another kind is refused."""
    if getattr(opt, "_regularization_method", "") == "l2_decay":
        return float(opt._regularization_coeff)
    reg = getattr(opt, "regularization", None)
    if reg is None:
        return 0.0
    if type(reg).__name__ != "L2Decay":
        raise PortInputError(f"Paddle optimizer regulariser {type(reg).__name__} has no torch counterpart here")
    return float(reg._coeff)


def paddle_settings(opt) -> dict:
    """What a built Paddle optimizer will do, in the spec's terms (read back from its attributes)."""
    name = type(opt).__name__
    out = {"kind": {"SGD": "sgd", "Momentum": "sgd", "Adam": "adam", "AdamW": "adamw"}.get(name, name),
           "lr": float(opt.get_lr())}
    if name == "SGD":
        out.update(weight_decay=_paddle_weight_decay(opt), momentum=0.0, dampening=0.0, nesterov=False)
    elif name == "Momentum":
        out.update(weight_decay=_f32(_paddle_weight_decay(opt)), momentum=_f32(opt._momentum), dampening=0.0,
                   nesterov=bool(opt._use_nesterov))
    else:
        wd = _f32(opt._weight_decay) if name == "AdamW" else _paddle_weight_decay(opt)
        out.update(weight_decay=wd, beta1=float(opt._beta1), beta2=float(opt._beta2), eps=float(opt._epsilon),
                   amsgrad=bool(opt._amsgrad))
        if name == "AdamW" and (opt._lr_ratio is not None or opt._apply_decay_param_fun is not None):
            out["decay_selection"] = "lr_ratio or apply_decay_param_fun set (torch decays every parameter alike)"
    return out


def settings_rows(spec: OptimizerSpec, torch_opt, paddle_opt) -> list[dict]:
    """One row per setting: what the spec asks, what torch's optimizer does, what Paddle's does (float32-rounded
    where its kernel rounds), and whether each side does what the spec (as Paddle computes it) asks."""
    want_t, want_p = _spec_settings(spec), _spec_settings(paddle_effective(spec))
    got_t, got_p = torch_settings(torch_opt), paddle_settings(paddle_opt)
    rows = []
    for key in dict.fromkeys(list(want_t) + list(got_t) + list(got_p)):
        t, p = got_t.get(key), got_p.get(key)
        rows.append({"setting": key, "spec": want_t.get(key), "torch": t, "paddle": p,
                     "ok": t == want_t.get(key) and p == want_p.get(key)})
    return rows


def _spec_settings(spec: OptimizerSpec) -> dict:
    out = {"kind": spec.kind, "lr": float(spec.lr), "weight_decay": float(spec.weight_decay)}
    if spec.kind == "sgd":
        out.update(momentum=float(spec.momentum), dampening=float(spec.dampening), nesterov=bool(spec.nesterov))
    else:
        out.update(beta1=float(spec.betas[0]), beta2=float(spec.betas[1]), eps=float(spec.eps),
                   amsgrad=bool(spec.amsgrad))
    return out


def mapping_rows(spec: OptimizerSpec) -> list[dict]:
    """How `spec` is spelled on each side (the report's optimizer table)."""
    t, p = torch_optimizer_name(spec), paddle_optimizer_name(spec)
    eff = paddle_effective(spec)
    rows = [{"setting": "class", "torch": t, "paddle": p}]
    for key, value in asdict(spec).items():
        if key != "kind":
            rows.append({"setting": key, "torch": value, "paddle": getattr(eff, key)})
    return rows


def torch_optimizer_name(spec: OptimizerSpec) -> str:
    return {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}[spec.kind]


def paddle_optimizer_name(spec: OptimizerSpec) -> str:
    if spec.kind == "sgd":
        return "paddle.optimizer.Momentum" if spec.momentum else "paddle.optimizer.SGD"
    return {"adam": "paddle.optimizer.Adam", "adamw": "paddle.optimizer.AdamW"}[spec.kind]
