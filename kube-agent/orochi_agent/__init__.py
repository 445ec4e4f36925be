"""kube-agent: turns the control plane's cluster records into real PostgreSQL clusters in one region."""

__version__ = "0.1.0"
