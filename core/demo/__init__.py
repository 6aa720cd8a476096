"""praefect.core.demo: the one-command demo cluster and the end-to-end scenario.

- ``processes``: child processes in their own process groups, their output
  kept in log files, stopped by pid, nothing left behind;
- ``cluster``: embedded Redis (owned by the router), three storage nodes, a
  router and the git HTTP gateway on loopback, in one work directory;
- ``gitrun``: plain ``git`` as a child process, and generated histories;
- ``status``: what the live table shows, collected from the nodes and Redis;
- ``scenario``: ``praefect demo --scenario``, step by step;
- ``interactive``: ``praefect demo`` until Ctrl-C.
"""
