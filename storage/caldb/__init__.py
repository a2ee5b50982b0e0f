"""CALDB: the calibration index, ingested and queried with HEASARC's semantics."""

from storage.caldb.index import (
    CaldbListRequest,
    CaldbQuery,
    DatasetRecord,
    IngestOptions,
    IngestResult,
    best_dataset,
    caldb_key,
    dataset_for_key,
    describe_extensions,
    ingest,
    ingest_stored,
    list_datasets,
    select_datasets,
    set_quality,
)

__all__ = [
    "CaldbListRequest",
    "CaldbQuery",
    "DatasetRecord",
    "IngestOptions",
    "IngestResult",
    "best_dataset",
    "caldb_key",
    "dataset_for_key",
    "describe_extensions",
    "ingest",
    "ingest_stored",
    "list_datasets",
    "select_datasets",
    "set_quality",
]
