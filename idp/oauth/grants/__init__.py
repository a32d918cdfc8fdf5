"""Token endpoint grants (RFC 6749 §4.1.3, §4.4, §6), one module each, their registry
(:mod:`.registry`) and what they share."""
