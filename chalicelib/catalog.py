"""What a cluster can be made of: regions, PostgreSQL versions, compute sizes, storage and instance bounds."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.settings import Settings
from chalicelib.shapes import Out

INSTANCES_MIN = 1
INSTANCES_MAX = 9


class RegionOut(Out):
    slug: str
    name: str


class PostgresVersionOut(Out):
    version: str
    image: str


class SizeOut(Out):
    slug: str
    vcpu: int
    memory_gb: int


class Bounds(Out):
    min: int
    max: int


class CatalogOut(Out):
    regions: list[RegionOut]
    postgres_versions: list[PostgresVersionOut]
    sizes: list[SizeOut]
    storage_gb: Bounds
    instances: Bounds


@dataclass(frozen=True)
class Size:
    slug: str
    vcpu: int
    memory_gb: int


SIZES: tuple[Size, ...] = (
    Size(slug="db-s-1vcpu-2gb", vcpu=1, memory_gb=2),
    Size(slug="db-s-2vcpu-4gb", vcpu=2, memory_gb=4),
    Size(slug="db-s-4vcpu-8gb", vcpu=4, memory_gb=8),
    Size(slug="db-m-4vcpu-32gb", vcpu=4, memory_gb=32),
    Size(slug="db-s-8vcpu-16gb", vcpu=8, memory_gb=16),
    Size(slug="db-m-8vcpu-64gb", vcpu=8, memory_gb=64),
    Size(slug="db-s-16vcpu-32gb", vcpu=16, memory_gb=32),
)
SIZES_BY_SLUG = {size.slug: size for size in SIZES}


def catalog(settings: Settings) -> CatalogOut:
    return CatalogOut(
        regions=[RegionOut(slug=slug, name=name) for slug, name in settings.regions],
        postgres_versions=[PostgresVersionOut(version=v, image=image) for v, image in settings.postgres_images],
        sizes=[SizeOut(slug=s.slug, vcpu=s.vcpu, memory_gb=s.memory_gb) for s in SIZES],
        storage_gb=Bounds(min=settings.storage_gb_min, max=settings.storage_gb_max),
        instances=Bounds(min=INSTANCES_MIN, max=INSTANCES_MAX),
    )


def image_for(settings: Settings, version: str) -> str:
    return dict(settings.postgres_images)[version]
