"""Email and SMS: queued in the database with what caused them, delivered by a background worker."""
