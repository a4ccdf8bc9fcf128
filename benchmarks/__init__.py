"""Benchmarks of icmh-hub's adapters: run ``python -m benchmarks.<name>`` from the repository root.

Every figure is a ratio of two things measured in the same run, interleaved, so that a busy or
throttled machine shifts both sides alike. See ``docs/readme/performance.md``.
"""
