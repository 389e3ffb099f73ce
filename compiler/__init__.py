"""Target-neutral core of anychip: frontends, importer, build driver, artifacts, verification, CLI."""
