"""Drivers turn a desired state into running PostgreSQL servers: `local` (processes on this machine)
and `cnpg` (CloudNativePG on Kubernetes). The loop talks to them only through `Driver`."""
