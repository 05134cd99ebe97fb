"""Framework-neutral parts of the CoNR port: architecture configuration, the official checkpoint manifest and the
torch <-> Paddle rename table, safe checkpoint readers/writers and weight folders (`checkpoints`), the conversion
library (`conversion`), the ONNX contract, the data pipeline (numpy + OpenCV), sample data, and the error type every
command reports in one line.

No module here imports another package of this project, and none imports torch or paddle at import time: the
readers and writers that need a framework import it inside the function.

CoNR: Collaborative Neural Rendering using Anime Character Sheets (Lin et al., 2022, arXiv:2207.05378);
official code megvii-research/CoNR, commit 660c4f7 (MIT).
"""
