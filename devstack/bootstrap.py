"""Create the table (and queues) the settings name, on whatever AWS_ENDPOINT_URL points at. Idempotent."""

from __future__ import annotations

from chalicelib import jobs
from chalicelib.settings import get_settings
from chalicelib.store import table


def main() -> None:
    settings = get_settings()
    table.configure(table_name=settings.table_name)
    table.create_table()
    jobs.create_queues(settings)


if __name__ == "__main__":
    main()
