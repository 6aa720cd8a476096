"""Helpers shared by the test suite: real processes, ports, git identities."""
