"""Benchmarks (not tests): time and memory of the Unified Focal loss family against its peers.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a smoke run, ``--help`` for options).
``benchmarks.losses`` times each loss's forward+backward and measures its peak extra memory;
``benchmarks.training`` times whole nnU-Net training iterations; ``benchmarks.report`` writes the tables.
Method and measured numbers: docs/performance.md.
"""
