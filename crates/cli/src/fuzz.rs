//! Fuzz targets (written below).
