"""gRPC servicers: thin adapters from messages to the domain code."""
