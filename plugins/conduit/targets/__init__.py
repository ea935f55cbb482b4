"""ERP targets: where mapped customer rows land (see ``base.ErpTarget``)."""

from conduit.targets.base import ErpTarget, KeyChecksum, LoadPlan, LoadResult, Watermark, frame_key_checksum
from conduit.targets.sql import PostgresErpTarget, SqliteErpTarget

__all__ = ["ErpTarget", "KeyChecksum", "LoadPlan", "LoadResult", "PostgresErpTarget", "SqliteErpTarget", "Watermark", "frame_key_checksum"]
