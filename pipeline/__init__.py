"""Prefect flows and training code: demo data, training sets, the cascade, promotion."""
