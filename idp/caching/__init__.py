"""What every process keeps in memory for its hot paths, and how it knows when that is stale."""
