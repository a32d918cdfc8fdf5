"""What idp tells its operator: JSON logs with a request id, an access line and metrics per request."""
