"""The core: codec specs and their registry, the adapter modules, adapter sets, attaching them
to a codec, rate, padding, identities, the task table and the frozen recognition models.

Nothing here knows where weights come from (that is the hub's and the assembler's job).
"""
