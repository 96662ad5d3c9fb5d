"""The edge aggregator role."""
