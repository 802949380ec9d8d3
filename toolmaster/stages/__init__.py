"""Stages, one per ``stage.name``: each exposes ``run(cfg)`` (``toolmaster.run`` dispatches to it).

``sft/`` and ``grpo/`` are folders that read module -> data -> run; ``evaluate``, ``synthesize`` and ``pipeline``
are single modules. Stages never import each other or the entry points (``tests/test_architecture.py``): what
they share lives in ``toolmaster.build``, ``toolmaster.training``, ``toolmaster.algorithms`` and
``toolmaster.evaluation``.
"""
