"""The `cnpg` driver: CloudNativePG clusters on Kubernetes (see `driver.py`)."""

from orochi_agent.drivers.cnpg.driver import CnpgDriver

__all__ = ["CnpgDriver"]
