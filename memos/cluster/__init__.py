"""Cluster mode: several daemons pointed at one Redis.

``stream`` carries cube-change events between replicas on a Redis Stream, ``leader`` elects one
replica at a time (a lease with fencing tokens) to run the cluster-wide jobs, ``accesses`` shares
every replica's page requests and Redis-level chunk accesses (each replica's predictor learns
from all of them; the leader evicts from the shared Redis level by them), and ``node`` wires
them to a daemon. Redis being away never stops a replica from serving its own clients.
"""
