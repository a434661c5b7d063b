"""A faithful simulator of Oxen.ai's inference API (see docs/provider-api.md)."""
