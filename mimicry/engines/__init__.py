"""Where embedding runs: ``local`` (threads in this process, the default) or
``ray`` (a Ray cluster through Ray Data, :mod:`mimicry.engines.ray_engine`;
``pip install .[ray]``). Both yield the same stretches to the same commit
loop, so the index is written exactly as it is locally."""

ENGINES = ("local", "ray")
