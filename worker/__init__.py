"""modelyard's registry front-end: a read-only OCI distribution API (and the catalog site) over the store."""
