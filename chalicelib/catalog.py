"""What a cluster can be made of: regions, PostgreSQL versions, compute sizes, storage and instance bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

from chalicelib.settings import Settings
from chalicelib.shapes import CATALOG_KEY, JSON_INTEGER, CatalogBound, Out

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
class ComputeSize:
    slug: str
    vcpu: int
    memory_gb: int


SIZES: tuple[ComputeSize, ...] = (
    ComputeSize(slug="db-s-1vcpu-2gb", vcpu=1, memory_gb=2),
    ComputeSize(slug="db-s-2vcpu-4gb", vcpu=2, memory_gb=4),
    ComputeSize(slug="db-s-4vcpu-8gb", vcpu=4, memory_gb=8),
    ComputeSize(slug="db-m-4vcpu-32gb", vcpu=4, memory_gb=32),
    ComputeSize(slug="db-s-8vcpu-16gb", vcpu=8, memory_gb=16),
    ComputeSize(slug="db-m-8vcpu-64gb", vcpu=8, memory_gb=64),
    ComputeSize(slug="db-s-16vcpu-32gb", vcpu=16, memory_gb=32),
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


def _settings(info: ValidationInfo) -> Settings | None:
    """The settings the API validates with (the validation context); None where a model is built without them."""
    return (info.context or {}).get("settings")


def _region(value: str, info: ValidationInfo) -> str:
    settings = _settings(info)
    if settings is not None and value not in settings.region_slugs:
        raise ValueError(f"unknown region; one of {', '.join(settings.region_slugs)}")
    return value


def _version(value: str, info: ValidationInfo) -> str:
    settings = _settings(info)
    if settings is not None and value not in dict(settings.postgres_images):
        raise ValueError(f"unsupported version; one of {', '.join(dict(settings.postgres_images))}")
    return value


def _size(value: str) -> str:
    if value not in SIZES_BY_SLUG:
        raise ValueError("unknown size; see GET /v1/catalog")
    return value


def _storage(value: int, info: ValidationInfo) -> int:
    settings = _settings(info)
    if settings is not None and not settings.storage_gb_min <= value <= settings.storage_gb_max:
        raise ValueError(f"must be between {settings.storage_gb_min} and {settings.storage_gb_max}")
    return value


# Fields that take a value from the catalog: checked against the settings on parse, and stated in the OpenAPI
# document from the same settings (`document_bounds`).
Region = Annotated[str, AfterValidator(_region), CatalogBound("region")]
PostgresVersion = Annotated[str, AfterValidator(_version), CatalogBound("postgres_version")]
Size = Annotated[str, AfterValidator(_size), CatalogBound("size")]
StorageGb = Annotated[int, Field(ge=1), JSON_INTEGER, AfterValidator(_storage), CatalogBound("storage_gb")]


def document_bounds(schema: Any, settings: Settings) -> Any:
    """`schema` (a JSON Schema, walked whole) with every catalog-bound field's enum or bounds from `settings`."""
    if isinstance(schema, list):
        return [document_bounds(item, settings) for item in schema]
    if not isinstance(schema, dict):
        return schema
    filled = {key: document_bounds(value, settings) for key, value in schema.items()}
    kind = schema.get(CATALOG_KEY)
    if kind == "region":
        filled["enum"] = list(settings.region_slugs)
    elif kind == "postgres_version":
        filled["enum"] = [version for version, _ in settings.postgres_images]
    elif kind == "size":
        filled["enum"] = [size.slug for size in SIZES]
    elif kind == "storage_gb":
        filled["minimum"], filled["maximum"] = settings.storage_gb_min, settings.storage_gb_max
    return filled
