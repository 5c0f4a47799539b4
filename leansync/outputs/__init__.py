"""What leansync publishes from a history: metrics and Datasette metadata."""
