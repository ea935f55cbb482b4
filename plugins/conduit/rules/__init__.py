"""Business rules as data: routing decisions kept in small typed YAML files, not in code.

A decision such as "a low fraud score on a small order is approved, a high one rejected, the rest
reviewed" changes with the business, not with the pipeline: it lives in ``include/rules/*.yaml``
(:mod:`conduit.rules.model` loads and validates it, naming file and field on a mistake) and is
applied by one pure function, :func:`conduit.rules.engine.evaluate`, that also says which rule
decided and on which facts, so every decision can be explained afterwards.
"""
