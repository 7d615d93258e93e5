"""One storage layer for every path the project reads or writes: a local directory or an object store.

``Location`` wraps ``pyarrow.fs`` (S3 and S3-compatible stores, GCS, Azure, HDFS, local disks) so
that curation, validation, statistics and training accept ``s3://bucket/prefix`` wherever they
accept a directory. Media tools that need a real file work on a local scratch copy
(``storage.scratch``).
"""

from storage.location import Location, StorageError, check_access

__all__ = ["Location", "StorageError", "check_access"]
