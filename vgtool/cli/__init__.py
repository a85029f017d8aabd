"""The command-line interface: one module per command, each a thin layer over a library function.

Nothing here imports torch or transformers at module level, so ``--help`` stays fast.
"""
