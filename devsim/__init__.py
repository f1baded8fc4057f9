"""Device simulators for tests and the demo: real formats, signed with test roots that
only an explicit test setting trusts (never a production default)."""
