"""Acting on machines: this one, or hosts reached over SSH."""
