"""Where a run's answer comes from: the QuantConnect client, its deadline, and the payload's validation."""
