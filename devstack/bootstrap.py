"""Create the table (and queues) the settings name, on whatever AWS_ENDPOINT_URL points at. Idempotent."""

from __future__ import annotations

from chalicelib import jobs
from chalicelib.settings import get_settings
from chalicelib.store import base


def main() -> None:
    settings = get_settings()
    base.configure(table_name=settings.table_name)
    base.create_table()
    jobs.create_queues(settings)


if __name__ == "__main__":
    main()
