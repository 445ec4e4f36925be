"""What a compute size (vCPUs, GiB of memory) means for PostgreSQL: one answer for every driver."""

from __future__ import annotations

MIB_PER_GIB = 1024


def max_connections(memory_gb: int) -> int:
    """max_connections for a size with `memory_gb` GiB: 25 per GiB plus 50, at most 500
    (2 GiB → 100, 4 → 150, 8 → 250, 16 and more → 500)."""
    return min(25 * memory_gb + 50, 500)


def parameters(*, vcpu: int, memory_gb: int) -> dict[str, str]:
    """The size-derived PostgreSQL parameters of a server that has the size's memory to itself.

    shared_buffers is 25 % of the memory and effective_cache_size 75 %; work_mem shares another quarter between
    the connections (at least 4 MB); maintenance_work_mem is 1/16 of the memory (64 MB to 2 GB); the parallel
    workers follow the vCPUs. Values are in MB or kB, the units PostgreSQL reads without a suffix table.
    """
    memory_mb = max(memory_gb, 1) * MIB_PER_GIB
    cores = max(vcpu, 1)
    connections = max_connections(memory_gb)
    return {
        "shared_buffers": f"{memory_mb // 4}MB",
        "effective_cache_size": f"{memory_mb * 3 // 4}MB",
        "max_connections": str(connections),
        "work_mem": f"{max(4096, memory_mb * 1024 // 4 // connections)}kB",
        "maintenance_work_mem": f"{min(2048, max(64, memory_mb // 16))}MB",
        "max_worker_processes": str(max(8, cores)),
        "max_parallel_workers": str(cores),
        "max_parallel_workers_per_gather": str(max(1, cores // 2)),
        "max_parallel_maintenance_workers": str(max(1, cores // 2)),
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
    }
