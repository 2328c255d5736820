"""provisioner: plan, apply, recover and destroy Ray Serve clusters, Terraform-style."""

__version__ = "0.1.0"
