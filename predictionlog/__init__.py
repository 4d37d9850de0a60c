"""The prediction log: one record per served row, in SQLite (the default) or PostgreSQL.

``store`` owns the table and the database errors; ``records`` the record, the image
summary and reading them back. The gateway's writer (``skewguard.gateway.predlog``) and
the monitor both use them; neither imports the other.
"""
