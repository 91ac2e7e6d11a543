"""Orchestration: the run-directory stages, the export worker and the check processes.

The only layer that imports ``converters`` and ``quantization``; the core of
``hrnet_edge`` (models, data, tasks, training, evaluation) never does
(``tests/test_layers.py`` keeps it so).
"""
