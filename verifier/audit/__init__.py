"""The operators' audit log: a hash chain of every Operator RPC, who asked and what came of it.

``chain`` (encoding, hashing, verification) depends on nothing else of ours;
``recorder`` wraps the Operator servicer's handlers. Nothing is imported here,
so that the store can use ``chain`` without pulling in the server.
"""
