"""Ray Serve: the manifest (Serve config file), code packages and deployment."""
