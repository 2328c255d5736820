"""The AWS provider: Ray on EC2 (the head on an instance whose network interface keeps its
address, workers in an Auto Scaling group), an ALB or NLB in front of every node's Serve proxy.

Modules: ``api`` (clients, retries, rate limits), ``common`` (ownership tags, names, waiting),
``ec2``, ``autoscaling``, ``elb`` (the resource types; see provisioner.providers.base).
"""
