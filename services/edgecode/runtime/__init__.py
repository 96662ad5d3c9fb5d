"""What every service shares: server factory, health, reflection, error mapping, metrics, shutdown."""
