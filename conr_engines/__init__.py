"""The engines that run the Paddle port (issue 24): the eager model (`runner.EagerRunner`), Paddle Inference
(`inference`: export, custom operators, bf16 marks, predictor) and ONNX (`onnx`: contract, export, runner), over
the graph export they share (`export`: the step graphs, the verified cache folder); `runner.make_runner` picks one.
"""
