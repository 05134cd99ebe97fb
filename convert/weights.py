"""The weight check of the parity report (`python -m convert verify`): both weight sets read with
`conr_common.weights.checkpoints`' safe readers, and every official tensor compared, renamed through the converter's table
(`conr_common.contract.rename`), with its Paddle counterpart (name, shape, max abs difference of the values).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError

__all__ = ["load_weight_states", "check_parameters"]


def load_weight_states(torch_dir: Path, paddle_dir: Path) -> tuple[dict, dict, dict]:
    """(torch states, paddle states, file names) as numpy dicts, read with `conr_common.weights.checkpoints`' safe readers."""
    from conr_common.weights.checkpoints import network_path, read_network

    torch_states, paddle_states, files = {}, {}, {}
    for name in NETWORK_NAMES:
        tpath = network_path(torch_dir, name, "torch", needs="--torch needs the four official .pth files")
        ppath = network_path(paddle_dir, name, "paddle", safetensors=True,
                             needs="--paddle needs the four converted .pdparams files")
        torch_states[name] = read_network(tpath, "torch")
        paddle_states[name] = read_network(ppath, "paddle")
        files[name] = {"torch": str(tpath), "paddle": str(ppath)}
    return torch_states, paddle_states, files


def check_parameters(torch_states: dict, paddle_states: dict) -> list[dict]:
    """Per official tensor: its Paddle name (rename table), shape, and max abs difference of the values.

    Missing or unexpected names and shape mismatches are not a numerical finding but a wrong file: ConrInputError.
    """
    from conr_common.contract.rename import to_paddle_tensor, torch_to_paddle_key

    rows, problems = [], []
    for name in NETWORK_NAMES:
        tstate, pstate = torch_states[name], paddle_states[name]
        seen = set()
        for tkey, tval in tstate.items():
            tval = np.asarray(tval)
            pkey = torch_to_paddle_key(tkey, tval.shape)
            seen.add(pkey)
            if pkey not in pstate:
                problems.append(f"{name}: {pkey} (torch {tkey}) missing in the Paddle file")
                continue
            expected = to_paddle_tensor(tkey, tval)
            pval = np.asarray(pstate[pkey])
            if pval.shape != expected.shape:
                problems.append(f"{name}: {pkey} is {list(pval.shape)} in the Paddle file, {list(expected.shape)} expected")
                continue
            d = np.abs(expected.astype(np.float64) - pval.astype(np.float64))
            max_abs = float(d.max()) if d.size else 0.0
            rows.append({
                "network": name, "torch_key": tkey, "paddle_key": pkey, "shape": list(pval.shape),
                "torch_dtype": str(expected.dtype), "paddle_dtype": str(pval.dtype), "max_abs": max_abs,
                "differing": int(np.count_nonzero(d)),
            })
        extra = [k for k in pstate if k not in seen]
        if extra:
            problems.append(f"{name}: unexpected Paddle tensor(s) {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    if problems:
        raise ConrInputError("the weight sets do not match name for name: " + "; ".join(problems[:5])
                             + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return rows
