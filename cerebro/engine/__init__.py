"""Shared machinery: the autopsy context, hook management, batching and memory policy."""
