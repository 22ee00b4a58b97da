"""relay's load generator (`relay bench`) and the baseline it compares relay with.

Not part of the product: the container image installs only the relay package. Install it from a
checkout with ``pip install -e '.[bench]'``; then ``relay bench`` or ``python -m bench`` runs it.

Modules: ``cli`` (arguments, what a run does), ``workload`` (the plan and its rooms), ``generator`` (one
load generator process), ``runner`` (one measured run), ``measure`` (server CPU and memory from /proc),
``report`` (figures and the table), ``servers`` and ``processes`` (the servers a run starts; the latter
shared with the tests), ``baseline`` (the smallest relay on the same stack).
"""
