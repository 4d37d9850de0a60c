"""Served log + training reference → Evidently drift and skew reports → verdict."""
