"""Service functions (keyword-only), one module per resource; routes and the CLI call these."""
