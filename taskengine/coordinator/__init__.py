"""The coordinator: ``TaskEngine`` and the parts it runs inside the host process.

It owns the task table's life cycle: validation and registration (``registry``), the dispatch
loop that claims due tasks, hands them to a runner and writes outcomes (``reactor``,
``planner``, ``writer``), publication of changes to callbacks and waiters (``publishing``),
retention, leases and statistics.  It uses the rules (``core``), the process pools (``pool``)
and one store (``stores``); none of those import it.
"""
