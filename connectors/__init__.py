"""Connectors: each turns one source's API into normalized ticket changes and a cursor.

A connector knows its API and nothing of storage: ``sync`` yields batches, each with the
cursor to resume from once the batch is stored; the monitor stores both in one
transaction.
"""

from connectors.base import (
    Batch,
    Connector,
    FatalError,
    RetriableError,
    TicketChange,
    connector_types,
    register,
)

__all__ = [
    "Batch",
    "Connector",
    "FatalError",
    "RetriableError",
    "TicketChange",
    "connector_types",
    "register",
]
