"""Developer tools over the CoNR port: the checkpoint converter's command line and the parity reports
(`python -m convert --help`). The libraries they drive live in `conr_common` (framework-neutral) and the model
packages; nothing there imports this package.

- `convert.cli`: `main(argv=None) -> int`, subcommands torch2paddle / paddle2torch / inspect (+ verify, verify-pair, export-onnx);
- `convert.run`: what those subcommands print (`convert.conversion` converts, `conr_common.weights.checkpoints` reads
  and writes files, `conr_common.contract.manifest` and `conr_common.contract.rename` check and rename state dicts);
- `convert.verify`, `convert.report`: CoNR's layer-by-layer parity report (`convert.weights` compares the weight
  sets, `convert.passes` runs the models with `portcheck.record`'s recorders, `convert.judge` gives the verdicts,
  the float64 referee's from `portcheck.verdicts`);
- `verify-pair` (`portcheck.cli`): the same kind of report for any torch module and Paddle layer (`portcheck`);
- `convert.onnx_export`, `convert.onnx_verify`: `export-onnx` (the PyTorch export; the Paddle one is
  `conr_engines.onnx.export`) and the ONNX column of verify.
Nothing is imported from torch or paddle until a file is read or written.
"""
