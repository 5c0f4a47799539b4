"""leansync: a durable, queryable history of QuantConnect LEAN engine versions."""

__version__ = "0.1.0"
