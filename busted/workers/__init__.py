"""The pipeline's worker processes, one module per role:
capture -> classify -> identity -> policy -> output.

Each role module exposes ``STAGE`` (a :class:`busted.workers.stage.Stage` subclass),
except capture, which drives a source instead of pulling from a socket.
"""

ROLES = ("capture", "classify", "identity", "policy", "output")
