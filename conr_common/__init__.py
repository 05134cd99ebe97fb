"""The framework-neutral layer both ports and everything above them share, split by concern (issue 24):

- `platform`: the one-line error type, atomic writes, file locks and checksums, the output guard, machine facts
  (cpu, memory), library versions, quieting library chatter;
- `contract`: the model contract: architecture config, the official checkpoint manifest, the torch <-> Paddle rename
  table;
- `weights`: safe checkpoint readers/writers and weight folders;
- `data`: the numpy + OpenCV data pipeline, image headers, input checks, sample data;
- `cli`: command-line helpers and the render options checked once;
- `verification`: what the parity checks share: tolerances, the array diff, the seeded weight draws.

No module here imports another package of this project except `portcheck` (the verifier at the bottom), and none
imports torch or paddle at import time: the readers and writers that need a framework import it inside the function.

CoNR: Collaborative Neural Rendering using Anime Character Sheets (Lin et al., 2022, arXiv:2207.05378);
official code megvii-research/CoNR, commit 660c4f7 (MIT).
"""
