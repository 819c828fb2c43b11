"""Cluster mode: several daemons pointed at one Redis.

``stream`` carries cube-change events between replicas on a Redis Stream, ``leader`` elects one
replica at a time (a lease with fencing tokens) to run the cluster-wide jobs, and ``node`` wires
both to a daemon. Redis being away never stops a replica from serving its own clients.
"""
