"""PyTorch reference of CoNR with exactly the official checkpoint layout.

Re-implemented from the behaviour of the official code (megvii-research/CoNR @ 660c4f7, MIT), for:
Lin et al., "Collaborative Neural Rendering using Anime Character Sheets", arXiv:2207.05378.
It is the yardstick the Paddle port (`conr_paddle`, same file names) is measured against.
"""
