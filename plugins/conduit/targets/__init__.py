"""ERP targets: where mapped customer rows land (see ``base.ErpTarget``)."""

from conduit.targets.base import ErpTarget, KeyChecksum, LoadResult, Watermark, frame_key_checksum
from conduit.targets.sql import PostgresErpTarget, SqliteErpTarget

__all__ = ["ErpTarget", "KeyChecksum", "LoadResult", "PostgresErpTarget", "SqliteErpTarget", "Watermark", "frame_key_checksum"]
