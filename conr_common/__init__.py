"""Framework-neutral parts of the CoNR port: architecture configuration, the official checkpoint manifest,
the data pipeline (numpy + OpenCV), sample data, and the error type every command reports in one line.

Nothing in this package imports torch or paddle.

CoNR: Collaborative Neural Rendering using Anime Character Sheets (Lin et al., 2022, arXiv:2207.05378);
official code megvii-research/CoNR, commit 660c4f7 (MIT).
"""
