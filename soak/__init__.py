"""Soak and load tools for the notification streams: real daphne, real sockets, bounded runs."""
